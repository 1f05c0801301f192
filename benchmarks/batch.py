"""Images per second of a seed sweep at batch 1, 2 and 4, side by side in one process.

    python benchmarks/batch.py                                  # builtin:shapes, 128x128, 10 steps
    python benchmarks/batch.py --checkpoint /tmp/sd15 --size 256 --steps 4 --rounds 2

Each round runs the same sweep (``--items`` seeds) once per batch size, the order rotating between
rounds, with the output cache emptied first (the checkpoint stays loaded), so each measurement does
the whole job. Two ways of batching are measured: 'exact' (the default on a CPU: layers whose CPU
kernels round differently by batch size compute in serial-sized slices, so the pixels equal the
serial run's bit for bit) and 'wide' (the whole batch at once, as on CUDA). It prints the median
images/s of each and its ratio to batch 1, and checks that 'exact' batches give the serial pixels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sdflow  # noqa: E402
from sdflow.nodes import batch_shape  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default="builtin:shapes")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sampler", default="euler_ancestral")
    parser.add_argument("--items", type=int, default=4, help="seeds in the sweep")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    graph = sdflow.load(ROOT / "examples" / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = args.checkpoint
    graph["empty"].set(width=args.size, height=args.size)
    graph["schedule"].set(sampler=args.sampler, steps=args.steps)
    items = [{"seed": seed} for seed in range(1, args.items + 1)]
    batches = [int(b) for b in args.batches.split(",")]
    runner = sdflow.Runner(device="cpu", dtype=args.dtype)

    def sweep(batch: int, exact: bool) -> tuple[float, list[torch.Tensor]]:
        batch_shape.EXACT_ON_CPU = exact
        runner.outputs.clear()
        started = time.perf_counter()
        results = runner.run_batch(graph, items, batch=batch, outputs=["decoded"])
        seconds = time.perf_counter() - started
        return len(items) / seconds, [r.tensor("decoded") for r in results]

    _, reference = sweep(1, True)  # loads the checkpoint; the serial pixels
    configs = [(1, True)] + [(b, exact) for b in batches if b > 1 for exact in (True, False)]
    rates: dict[tuple[int, bool], list[float]] = {config: [] for config in configs}
    for round_ in range(args.rounds):
        shift = round_ % len(configs)
        for batch, exact in configs[shift:] + configs[:shift]:
            rate, images = sweep(batch, exact)
            rates[(batch, exact)].append(rate)
            if exact:
                assert all(torch.equal(a, b) for a, b in zip(images, reference, strict=True)), (
                    f"batch {batch} (exact) changed the pixels"
                )

    print(
        f"{args.checkpoint}, {args.size}x{args.size}, {args.steps} steps {args.sampler}, "
        f"{args.items} images per sweep, {args.dtype}, {args.threads} thread(s), {args.rounds} rounds"
    )
    base = statistics.median(rates[(1, True)])
    for (batch, exact), values in rates.items():
        mode = "serial" if batch == 1 else "exact" if exact else "wide"
        median = statistics.median(values)
        print(f"batch {batch} {mode:<6}  {median:7.3f} images/s  x{median / base:.2f}")
    print("exact batches gave the serial pixels bit for bit")


if __name__ == "__main__":
    main()
