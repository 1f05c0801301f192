"""The runner's overhead: examples/txt2img.yaml through the Runner against a hand-written diffusers loop
doing the same work on the same loaded components, interleaved in one process.

    python benchmarks/overhead.py [--size 128] [--steps 25] [--repeats 15] [--threads 1]

Each repetition clears the runner's output cache (the checkpoint stays loaded in its model cache), so
both sides encode the two prompts, draw the noise, run every denoising step and decode the image.
The two images are checked to be identical, so both sides did the same work. The script prints the
median and minimum times of each side and the ratio runner / hand loop as overhead in percent: the
median of the per-repetition ratios (the least noisy on a shared machine), and the ratios of the
medians and of the minimums.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from diffusers import EulerAncestralDiscreteScheduler

from sdflow.graphs.loading import load
from sdflow.nodes.types import Clip, Model, Vae
from sdflow.runner import Runner

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"
GOAL_PERCENT = 2.0
NOISY = 0.03  # medians this far above the minimums mean other work disturbed the timings


@dataclass(frozen=True)
class Work:
    """What both sides compute."""

    prompt: str
    negative: str
    steps: int
    cfg: float
    size: int
    sampler: str = "euler_ancestral"  # draws noise every step: both sides take it from the seed


def hand_loop(model: Model, clip: Clip, vae: Vae, work: Work, seed: int) -> torch.Tensor:
    """txt2img written out directly against diffusers and transformers, as in diffusers' "write your
    own pipeline" guide: encode, noise, denoise with batched CFG, decode."""
    tokenizer, encoder = clip.tokenizer, clip.text_encoder

    def encode(text: str) -> torch.Tensor:
        ids = tokenizer(
            text,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return encoder(ids)[0]

    with torch.inference_mode():
        embeds = torch.cat([encode(work.negative), encode(work.prompt)])
        scheduler = EulerAncestralDiscreteScheduler.from_config(model.scheduler_config)
        scheduler.set_timesteps(work.steps)
        shape = (1, 4, work.size // 8, work.size // 8)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            noise = model.unet(model_input, t, encoder_hidden_states=embeds).sample
            uncond, cond = noise.chunk(2)
            noise = uncond + work.cfg * (cond - uncond)
            latents = scheduler.step(noise, t, latents, generator=generator).prev_sample
        image = vae.vae.decode(latents / vae.vae.config.scaling_factor).sample
        return (image / 2 + 0.5).clamp(0, 1)


def timed(function, *args) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=15, help="timed repetitions of each side")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    workflow = load(EXAMPLE)
    workflow.nodes["empty"].fields.update(width=args.size, height=args.size)
    inputs = load(EXAMPLE).inputs
    work = Work(
        prompt=inputs["prompt"].default,
        negative=inputs["negative"].default,
        steps=args.steps,
        cfg=inputs["cfg"].default,
        size=args.size,
    )
    runner = Runner(device="cpu", dtype="fp32")
    values = {"steps": work.steps, "sampler": work.sampler}
    loaded = runner.run(workflow, inputs=values, outputs=["ckpt"])  # load once; both sides share it
    model, clip, vae = loaded["ckpt.model"], loaded["ckpt.clip"], loaded["ckpt.vae"]

    def through_runner(seed: int) -> torch.Tensor:
        runner.outputs.clear()  # every node but LoadCheckpoint runs again, as the hand loop does
        return runner.run(workflow, inputs={**values, "seed": seed}, outputs=["decoded"])["decoded"].pixels

    # Warm-up, and proof that both sides compute the same image.
    ours, theirs = through_runner(0), hand_loop(model, clip, vae, work, 0)
    difference = float((ours - theirs).abs().max())

    runner_times, hand_times = [], []
    for repeat in range(args.repeats):
        seed = repeat + 1
        first, second = (through_runner, "runner"), (lambda s: hand_loop(model, clip, vae, work, s), "hand")
        for function, side in (first, second) if repeat % 2 == 0 else (second, first):
            seconds, _ = timed(function, seed)
            (runner_times if side == "runner" else hand_times).append(seconds)

    runner_median, hand_median = statistics.median(runner_times), statistics.median(hand_times)
    runner_min, hand_min = min(runner_times), min(hand_times)
    # Each repetition's two sides ran back to back, under the same machine load: their ratio is the
    # least noisy figure on a shared machine.
    paired = statistics.median(r / h for r, h in zip(runner_times, hand_times, strict=True))
    planning = min(timed(runner.keys, workflow, values, ["decoded"])[0] for _ in range(args.repeats))
    print(
        f"txt2img {work.size}x{work.size}, {work.steps} steps, {work.sampler}, cfg {work.cfg}, "
        f"{args.threads} thread(s), {args.repeats} repetitions each, interleaved"
    )
    print(f"same image: max abs difference {difference:.2e}")
    print(f"hand loop: median {hand_median * 1000:8.1f} ms   min {hand_min * 1000:8.1f} ms")
    print(f"runner:    median {runner_median * 1000:8.1f} ms   min {runner_min * 1000:8.1f} ms")
    print(f"runner bookkeeping (validate, plan, cache keys) per run: {planning * 1000:.1f} ms")
    spread = max(hand_median / hand_min, runner_median / runner_min) - 1
    if spread > NOISY:
        print(f"warning: medians are {100 * spread:.0f}% above minimums: the machine was busy, run again")
    ratios = (
        ("median of paired ratios", paired),
        ("ratio of medians", runner_median / hand_median),
        ("ratio of minimums", runner_min / hand_min),
    )
    for label, ratio in ratios:
        print(f"runner / hand loop, {label}: {ratio:.4f}  overhead {100 * (ratio - 1):+.2f}%")
    verdict = "within" if paired - 1 <= GOAL_PERCENT / 100 else "OVER"
    print(f"goal: overhead within {GOAL_PERCENT:.0f}% (median of paired ratios): {verdict}")


if __name__ == "__main__":
    main()
