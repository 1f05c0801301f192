"""Images per second of a seed sweep: serial, then on 1 and 2 Ray workers, side by side in one run.

    python benchmarks/scale.py [--images 16] [--steps 20] [--size 64] [--workers 1 2] [--threads 1]

Every side renders the same seeds of examples/txt2img.yaml (builtin:shapes) with its EmptyLatent
set to --size, writing PNGs into a temporary folder. Each side is warmed first (one sweep of as
many images as it has workers: the checkpoint loaded, the prompts encoded), then timed on the
whole sweep. The images of every side are checked to be byte-identical to the serial ones. Also
printed: each Ray side's cold start (starting the workers and the warm-up sweep), which a sweep
pays once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from sdflow.graphs.yaml_io import load
from sdflow.runner import Runner
from sdflow.runner.many import LocalBackend, run_many

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"


def sweep(backend, workflow, seeds: range, folder: Path) -> tuple[float, list[bytes]]:
    """Seconds for the sweep, and the bytes of the pictures it wrote."""
    started = time.perf_counter()
    results = run_many(workflow, [{"seed": s} for s in seeds], backend, output_dir=str(folder))
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if not r.ok]
    if failed:
        raise SystemExit(f"a run failed: {failed[0]}")
    return seconds, [Path(f).read_bytes() for r in results for f in r.files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, serial and per worker")
    args = parser.parse_args()

    import ray

    from sdflow.runner.distributed import RayBackend

    torch.set_num_threads(args.threads)
    workflow = load(EXAMPLE)
    workflow.inputs["steps"].default = args.steps
    workflow.nodes["empty"].fields.update(width=args.size, height=args.size)
    seeds = range(1000, 1000 + args.images)
    rows = []
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        local = LocalBackend(Runner(device="cpu"))
        sweep(local, workflow, range(1), folder / "warm")
        seconds, reference = sweep(local, workflow, seeds, folder / "serial")
        rows.append(("serial (one process)", seconds, None))
        ray.init(num_cpus=max(args.workers) * args.threads, include_dashboard=False, logging_level="warning")
        try:
            for workers in args.workers:
                started = time.perf_counter()
                with RayBackend(workers, device="cpu", cpus_per_worker=args.threads) as backend:
                    sweep(backend, workflow, range(workers), folder / f"warm{workers}")
                    cold = time.perf_counter() - started
                    seconds, pictures = sweep(backend, workflow, seeds, folder / f"ray{workers}")
                if pictures != reference:
                    raise SystemExit(f"{workers} worker(s) made other pictures than the serial run")
                rows.append((f"Ray, {workers} worker{'s' if workers > 1 else ''}", seconds, cold))
        finally:
            ray.shutdown()
    print(
        f"{args.images} images, {args.size}x{args.size}, {args.steps} steps, builtin:shapes, "
        f"{args.threads} thread(s) per process, {os.cpu_count()} CPUs; pictures identical to serial"
    )
    print(f"{'':24} {'seconds':>8} {'images/s':>9} {'vs serial':>9} {'cold start':>10}")
    base = rows[0][1]
    for name, seconds, cold in rows:
        start = f"{cold:9.1f}s" if cold is not None else f"{'-':>10}"
        print(f"{name:24} {seconds:8.2f} {args.images / seconds:9.2f} {base / seconds:8.2f}x {start}")


if __name__ == "__main__":
    main()
