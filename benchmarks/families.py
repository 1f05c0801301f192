"""SD3 and Flux: per-step latency and peak memory of sdflow against diffusers' pipeline, same model.

    python benchmarks/families.py [--families sd3,flux] [--size 256] [--steps 6] [--rounds 3]

The model is the family's tiny built-in (text encoders, tokenizers, VAE, scheduler) with its
transformer replaced by a random one of the real width (SD3.5-medium's 1536 = 24 heads of 64, Flux's
3072 = 24 heads of 128; ``--layers`` blocks, so it fits this machine), written to a temporary
diffusers folder. Each side runs in its own fresh process, alternating round by round: sdflow runs
``examples/sd3.yaml`` / ``examples/flux.yaml`` at ``--size`` on that folder, diffusers runs
StableDiffusion3Pipeline / FluxPipeline with the same prompt, negative prompt, CFG (SD3 4.5) or
distilled guidance (Flux 3.5), T5 length, steps and seed. Per-step latency is the time between the
first and the last step event (sdflow's StepProgress, diffusers' step-end callback) over the steps
between them; peak memory is the process's peak resident set (ru_maxrss) after the run, imports and
loading included, and the part of it above the peak after the imports (what loading and running took).
Printed: the medians and the ratios sdflow / diffusers (goal: <= 1.0 for both).
One torch thread, fp32, CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry"
T5_LENGTH = 128
WIDTHS = {  # (heads, head width, extra config)
    "sd3": (24, 64, {"pos_embed_max_size": 96, "sample_size": 128}),
    "flux": (24, 128, {"axes_dims_rope": [16, 56, 56]}),
}


def make_folder(family: str, out: Path, layers: int, seed: int = 0) -> Path:
    """The tiny built-in folder with a random real-width transformer (``layers`` blocks)."""
    import torch
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    folder = out / f"{family}-wide"
    shutil.copytree(BUILTIN / f"tiny-{family}", folder, ignore=shutil.ignore_patterns("transformer"))
    config = json.loads((BUILTIN / f"tiny-{family}" / "transformer" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    heads, head, extra = WIDTHS[family]
    config |= {"num_attention_heads": heads, "attention_head_dim": head, **extra}
    torch.manual_seed(seed)
    if family == "sd3":
        config |= {"num_layers": layers, "caption_projection_dim": heads * head}
        model = SD3Transformer2DModel(**config)
    else:
        config |= {"num_layers": max(1, layers // 2), "num_single_layers": layers}
        model = FluxTransformer2DModel(**config)
    model.save_pretrained(folder / "transformer")
    return folder


def run_sdflow(family: str, folder: Path, size: int, steps: int, seed: int) -> list[float]:
    from sdflow.graphs import loads
    from sdflow.runner import Runner
    from sdflow.runner.core.events import StepProgress

    example = ROOT / "examples" / f"{family}.yaml"
    text = example.read_text().replace("width: 64", f"width: {size}").replace("height: 64", f"height: {size}")
    text = text.replace("    text: !input prompt\n", f"    text: !input prompt\n    t5_length: {T5_LENGTH}\n")
    if family == "sd3":
        text = text.replace(
            "    text: !input negative\n", f"    text: !input negative\n    t5_length: {T5_LENGTH}\n"
        )
    stamps: list[float] = []
    runner = Runner(device="cpu", dtype="fp32")
    runner.subscribe(lambda e: stamps.append(time.perf_counter()) if isinstance(e, StepProgress) else None)
    inputs = {"checkpoint": str(folder), "steps": steps, "seed": seed, "prompt": PROMPT}
    with tempfile.TemporaryDirectory() as out:
        runner.run(loads(text, str(example)), inputs=inputs, output_dir=out)
    return stamps


def run_diffusers(family: str, folder: Path, size: int, steps: int, seed: int) -> list[float]:
    import torch
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    stamps: list[float] = []

    def stamp(pipe, index, t, callback_kwargs):
        stamps.append(time.perf_counter())
        return callback_kwargs

    common = {
        "height": size,
        "width": size,
        "num_inference_steps": steps,
        "generator": torch.Generator().manual_seed(seed),
        "max_sequence_length": T5_LENGTH,
        "callback_on_step_end": stamp,
        "output_type": "pil",
    }
    if family == "sd3":
        pipe = StableDiffusion3Pipeline.from_pretrained(str(folder))
        pipe.set_progress_bar_config(disable=True)
        pipe(PROMPT, negative_prompt=NEGATIVE, guidance_scale=4.5, **common)
    else:
        pipe = FluxPipeline.from_pretrained(str(folder))
        pipe.set_progress_bar_config(disable=True)
        pipe(PROMPT, guidance_scale=3.5, **common)
    return stamps


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.worker == "sdflow":
        import sdflow.nodes.library  # noqa: F401  (what a run imports, before the baseline)
        from sdflow.runner import Runner  # noqa: F401
    from diffusers import FluxPipeline, StableDiffusion3Pipeline  # noqa: F401

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    side = run_sdflow if args.worker == "sdflow" else run_diffusers
    stamps = side(args.family, Path(args.folder), args.size, args.steps, 7)
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"per_step": per_step, "peak_mb": peak_mb, "run_mb": peak_mb - base_mb}))


def measure(side: str, family: str, folder: Path, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--worker", side, "--family", family, "--folder", str(folder)]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{side} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="sd3,flux")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=["sdflow", "diffusers"])
    parser.add_argument("--family", default="sd3")
    parser.add_argument("--folder")
    parser.add_argument("--make", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.make:
        make_folder(args.family, Path(args.make), args.layers)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            # made in a child process: a worker's peak resident set starts at its parent's at fork
            # time (Linux keeps ru_maxrss across exec), so this process never holds a model
            make = [sys.executable, __file__, "--make", tmp, "--family", family, "--layers", str(args.layers)]
            subprocess.run(make, check=True, capture_output=True)
            folder = Path(tmp) / f"{family}-wide"
            results: dict[str, list[dict[str, float]]] = {"sdflow": [], "diffusers": []}
            for round_ in range(args.rounds):
                order = ["sdflow", "diffusers"] if round_ % 2 == 0 else ["diffusers", "sdflow"]
                for side in order:
                    results[side].append(measure(side, family, folder, args))
            med = {
                s: {k: statistics.median(r[k] for r in rs) for k in ("per_step", "peak_mb", "run_mb")}
                for s, rs in results.items()
            }
            memory = med["sdflow"]["peak_mb"] / med["diffusers"]["peak_mb"]
            growth = med["sdflow"]["run_mb"] / med["diffusers"]["run_mb"]
            ratios = [
                a["per_step"] / b["per_step"]
                for a, b in zip(results["sdflow"], results["diffusers"], strict=True)
            ]
            print(
                f"{family} {args.size}x{args.size}, {args.steps} steps, {args.layers} layers: "
                f"step sdflow {med['sdflow']['per_step'] * 1000:.1f} ms, diffusers "
                f"{med['diffusers']['per_step'] * 1000:.1f} ms, ratio {statistics.median(ratios):.3f} "
                f"(median of paired); peak memory sdflow {med['sdflow']['peak_mb']:.0f} MB, diffusers "
                f"{med['diffusers']['peak_mb']:.0f} MB, ratio {memory:.3f}; of it loading and running "
                f"sdflow {med['sdflow']['run_mb']:.0f} MB, diffusers {med['diffusers']['run_mb']:.0f} MB, "
                f"ratio {growth:.3f}"
            )
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
