"""Images per second of a seed sweep: serial, and on 1 and 2 Ray workers, side by side in one run.

    python benchmarks/scale.py [--images 8] [--rounds 5] [--steps 20] [--size 64] [--workers 1 2]

Every side renders examples/txt2img.yaml (builtin:shapes, its EmptyLatent set to --size) for a
sweep of seeds, writing PNGs into a temporary folder: serial on one Runner in this process, and on
Ray pools of each --workers size, all started and warmed up first (checkpoint loaded, prompts
encoded; the time that takes is printed as the cold start, which a sweep pays once). Then, each
round, every side renders the round's seeds (new seeds each round, so nothing comes from a cache),
in an order that rotates between rounds; the pictures of every side must be byte-identical to the
serial ones. A shared machine's load changes from minute to minute, so each side's speed-up is the
median over rounds of its ratio to the serial time *of the same round*.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from sdflow.graphs.loading import load
from sdflow.runner import Runner
from sdflow.runner.scale.many import LocalBackend, run_many

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
    parser.add_argument("--images", type=int, default=8, help="images per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import ray

    from sdflow.runner.scale.distributed import RayBackend

    torch.set_num_threads(1)
    workflow = load(EXAMPLE)
    workflow.inputs["steps"].default = args.steps
    workflow.nodes["empty"].fields.update(width=args.size, height=args.size)
    names = ["serial (one process)"] + [f"Ray, {n} worker{'s' if n > 1 else ''}" for n in args.workers]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cold: dict[str, float] = {}
    ray.init(num_cpus=sum(args.workers), include_dashboard=False, logging_level="warning")
    pools = [RayBackend(n, device="cpu") for n in args.workers]
    try:
        with tempfile.TemporaryDirectory() as temp:
            folder = Path(temp)
            sides = [LocalBackend(Runner(device="cpu")), *pools]
            warm = range(10**6, 10**6 + max(args.workers))  # seeds no round uses
            for name, backend, size in zip(names, sides, [1, *args.workers], strict=True):
                started = time.perf_counter()
                sweep(backend, workflow, warm[:size], folder / "warm")
                cold[name] = time.perf_counter() - started
            for round_ in range(args.rounds):
                seeds = range(round_ * args.images, (round_ + 1) * args.images)
                order = list(range(len(sides)))
                order = order[round_ % len(order) :] + order[: round_ % len(order)]
                pictures = {}
                for i in order:
                    taken, pictures[i] = sweep(sides[i], workflow, seeds, folder / f"{round_}-{i}")
                    seconds[names[i]].append(taken)
                if any(pictures[i] != pictures[0] for i in pictures):
                    raise SystemExit("a Ray pool made other pictures than the serial run")
    finally:
        for pool in pools:
            pool.close()
        ray.shutdown()
    busy = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the end: {busy[0]:.1f} {busy[1]:.1f} {busy[2]:.1f}")
    print(
        f"{args.images} images x {args.rounds} rounds per side, {args.size}x{args.size}, {args.steps} steps, "
        f"builtin:shapes, 1 torch thread per process, {os.cpu_count()} CPUs; pictures identical to serial"
    )
    print(f"{'':22} {'median s':>9} {'images/s':>9} {'speed-up':>9} {'(range)':>13} {'cold start':>11}")
    serial = seconds[names[0]]
    for name in names:
        median = statistics.median(seconds[name])
        ratios = [s / t for s, t in zip(serial, seconds[name], strict=True)]
        spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
        print(
            f"{name:22} {median:9.2f} {args.images / median:9.2f} {statistics.median(ratios):8.2f}x "
            f"{spread:>13} {cold[name]:10.1f}s"
        )


if __name__ == "__main__":
    main()
