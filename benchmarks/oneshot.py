"""The one-shot CLI: wall time and time to the first step of `sdflow run` on the shipped example,
this tree beside a baseline commit, in one run (alternating), and the floor no run can go under.

    python benchmarks/oneshot.py                       # this tree vs --baseline, 5 rounds
    python benchmarks/oneshot.py --baseline HEAD~3 --rounds 7

Each round starts a fresh `python -m sdflow.cli run examples/txt2img.yaml` per tree (the baseline is
checked out into a temporary git worktree and put first on PYTHONPATH), so every import, model load
and the 20-step loop are in the figure. The speedup is the median of the paired ratios baseline /
this tree; `ssim` compares the two trees' pictures (1.000: the same pixels). The floor is a fresh
interpreter importing only torch, diffusers' UNet/VAE/scheduler and transformers' CLIP: the part of
the wall time that belongs to those packages' own imports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = "examples/txt2img.yaml"
FLOOR = (
    "import torch; from diffusers import UNet2DConditionModel, AutoencoderKL, DDIMScheduler; "
    "from transformers import CLIPTextModel, CLIPTokenizer"
)


def _env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(tree: Path, out: Path) -> tuple[float, float | None, Path, float]:
    """Wall seconds of one fresh `sdflow run` from ``tree``, its time to the first step (None where
    the tree's report has none), the picture it wrote, and the CPU seconds it used (user + system:
    less swayed than the wall time by other work on a shared machine)."""
    report = out / f"report-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "sdflow.cli", "run", EXAMPLE, "--output-dir", str(out), "--quiet"]
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(
        [*command, "--report", str(report)], cwd=tree, env=_env(tree), capture_output=True, text=True
    )
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"sdflow run failed in {tree}:\n{done.stderr}")
    picture = Path(done.stdout.split()[-1])
    seconds = json.loads(report.read_text()).get("seconds", {})
    return wall, seconds.get("to_first_step"), picture, cpu


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), np.float32).transpose(2, 0, 1) / 255


def floor_seconds(tree: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR], cwd=tree, env=_env(tree), check=True)
    return time.perf_counter() - start


def measure(baseline: str, rounds: int) -> dict[str, float]:
    """Median figures over ``rounds`` alternating rounds; keys: speedup, ssim, wall, before, first_step,
    floor, cpu_speedup, cpu, cpu_before."""
    from sdflow.golden.compare import ssim

    with tempfile.TemporaryDirectory() as scratch:
        before_tree = Path(scratch) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before_tree), baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            out = Path(scratch) / "out"
            out.mkdir()
            one_run(ROOT, out), one_run(before_tree, out)  # warm the disk cache for both
            ratios, walls, befores, firsts, floors = [], [], [], [], []
            cpu_ratios, cpus, cpu_befores = [], [], []
            for round_ in range(rounds):
                trees = (ROOT, before_tree) if round_ % 2 == 0 else (before_tree, ROOT)
                runs = {tree: one_run(tree, out) for tree in trees}
                after, first, picture, cpu = runs[ROOT]
                before, _, old_picture, cpu_before = runs[before_tree]
                floors.append(floor_seconds(ROOT))
                ratios.append(before / after)
                walls.append(after)
                befores.append(before)
                firsts.append(first if first is not None else float("nan"))
                cpu_ratios.append(cpu_before / cpu)
                cpus.append(cpu)
                cpu_befores.append(cpu_before)
                print(
                    f"  round {round_ + 1}: baseline {before:.2f} s (cpu {cpu_before:.2f} s), "
                    f"this tree {after:.2f} s (cpu {cpu:.2f} s)"
                )
            pixels = [_pixels(p) for p in (picture, old_picture)]
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=ROOT)
    return {
        "speedup": statistics.median(ratios),
        "ssim": ssim(pixels[0], pixels[1]),
        "wall": statistics.median(walls),
        "before": statistics.median(befores),
        "first_step": statistics.median(firsts),
        "floor": statistics.median(floors),
        "cpu_speedup": statistics.median(cpu_ratios),
        "cpu": statistics.median(cpus),
        "cpu_before": statistics.median(cpu_befores),
    }


def describe(figures: dict[str, float]) -> str:
    return (
        f"  one-shot wall {figures['before']:.2f} s -> {figures['wall']:.2f} s; first step done at "
        f"{figures['first_step']:.2f} s; import floor {figures['floor']:.2f} s "
        f"({figures['floor'] / figures['wall']:.0%} of the wall time); cpu {figures['cpu_before']:.2f} s -> "
        f"{figures['cpu']:.2f} s ({figures['cpu_speedup']:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="cb139e8", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    figures = measure(args.baseline, args.rounds)
    print(describe(figures))
    print(f"oneshot speedup {figures['speedup']:.2f} ssim {figures['ssim']:.3f}")


if __name__ == "__main__":
    main()
