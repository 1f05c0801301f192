"""What one ControlNet costs on a denoise step, as a ratio to a plain step, in sdflow and in diffusers.

    python benchmarks/controlnet.py [--size 128] [--steps 20] [--rounds 5]

The model is ``builtin:shapes`` (a trained 3.2M-parameter SD 1.x-architecture UNet) with a random
ControlNet made from its UNet (``ControlNetModel.from_unet``, diffusers' real hint encoder channels
16, 32, 96, 256). sdflow runs ``examples/controlnet.yaml`` with and without the control (strength 0
skips it) and takes the DenoiseLoop node's time per step; diffusers runs
``StableDiffusionControlNetPipeline`` and ``StableDiffusionPipeline`` on the same components and
takes the time between its first and last step callbacks per step. Rounds alternate the sides; the
medians are printed. One torch thread, fp32, DDIM, CFG on.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "controlnet.yaml"
REAL_HINT = (16, 32, 96, 256)


def _tool():
    path = ROOT / "tools" / "make_tiny_controlnets.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sdflow_step(runner, text: str, folder: Path, strength: float, seed: int, steps: int) -> float:
    """Seconds per step of the example's DenoiseLoop (a new seed each call: it always runs)."""
    from sdflow.graphs import loads

    inputs = {"checkpoint": "builtin:shapes", "control": str(folder), "strength": strength}
    result = runner.run(loads(text, str(EXAMPLE)), inputs={**inputs, "seed": seed, "steps": steps})
    [loop] = [n for n in result.report.nodes if n.id == "denoised"]
    return loop.seconds / steps


def diffusers_step(pipe, steps: int, size: int, **kwargs) -> float:
    """Seconds per step between the first and the last step callback of one pipeline call."""
    stamps: list[float] = []

    def stamp(pipe, index, t, callback_kwargs):
        stamps.append(time.perf_counter())
        return callback_kwargs

    pipe(
        "a red circle on a blue background",
        num_inference_steps=steps,
        guidance_scale=4.0,
        height=size,
        width=size,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=stamp,
        **kwargs,
    )
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from diffusers import (
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionControlNetPipeline,
        StableDiffusionPipeline,
    )

    from sdflow.runner import Runner

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "control"
        _tool().tiny_controlnet("shapes", 0, REAL_HINT).save_pretrained(folder)
        size_line = f"width: {args.size}\n    height: {args.size}"
        text = EXAMPLE.read_text().replace("width: 64\n    height: 64", size_line)
        shapes = str(ROOT / "sdflow" / "builtin" / "shapes")
        plain = StableDiffusionPipeline.from_pretrained(shapes, dtype=torch.float32)
        plain.scheduler = DDIMScheduler.from_config(plain.scheduler.config)
        control = ControlNetModel.from_pretrained(folder)
        controlled = StableDiffusionControlNetPipeline(**plain.components, controlnet=control)
        for pipe in (plain, controlled):
            pipe.set_progress_bar_config(disable=True)
        picture = torch.rand(1, 3, args.size, args.size)
        runner = Runner(device="cpu", dtype="fp32")
        times: dict[str, list[float]] = {"sdflow plain": [], "sdflow control": [], "diffusers plain": [],
                                         "diffusers control": []}  # fmt: skip
        for round_ in range(args.rounds + 1):  # round 0 warms up
            samples = {
                "sdflow plain": sdflow_step(runner, text, folder, 0.0, 2 * round_, args.steps),
                "sdflow control": sdflow_step(runner, text, folder, 1.0, 2 * round_ + 1, args.steps),
                "diffusers plain": diffusers_step(plain, args.steps, args.size),
                "diffusers control": diffusers_step(controlled, args.steps, args.size, image=picture),
            }
            if round_:
                for name, value in samples.items():
                    times[name].append(value)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.size}x{args.size}, {args.steps} steps, builtin:shapes + a ControlNet of its UNet, 1 thread")
    for side in ("sdflow", "diffusers"):
        plain_ms, control_ms = medians[f"{side} plain"] * 1e3, medians[f"{side} control"] * 1e3
        print(
            f"  {side:9}  plain step {plain_ms:7.2f} ms  with ControlNet {control_ms:7.2f} ms  "
            f"ratio {control_ms / plain_ms:.3f}"
        )


if __name__ == "__main__":
    main()
