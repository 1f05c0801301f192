"""Hires fix in Python: the graph of examples/hires_fix.yaml built node for node: txt2img small,
upscale the latent, then img2img at partial strength to add detail.

Run: python examples/hires_fix.py [--hires-strength 0.4]  ->  outputs/hires_fix_NNNNN.png
"""

from __future__ import annotations

import argparse

import sdflow

YAML = "hires_fix.yaml"  # the workflow this file builds (tests compare the two node for node)


def build() -> sdflow.Graph:
    """Two passes sharing the checkpoint and the prompt encodings."""
    g = sdflow.Graph()
    prompt = g.input("prompt", "a red circle on a blue background")
    negative = g.input("negative", "")
    seed = g.input("seed", 42)
    steps = g.input("steps", 20)
    cfg = g.input("cfg", 4.0)
    sampler = g.input("sampler", "ddim")
    upscale = g.input("upscale", 2.0)
    hires_steps = g.input("hires_steps", 20)
    hires_strength = g.input("hires_strength", 0.5)
    checkpoint = g.input("checkpoint", "builtin:shapes")

    ckpt = g.LoadCheckpoint(id="ckpt", checkpoint=checkpoint)
    positive = g.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    negative_ = g.CLIPEncode(id="negative", clip=ckpt.clip, text=negative)
    empty = g.EmptyLatent(id="empty", width=32, height=32)
    schedule = g.Scheduler(id="schedule", model=ckpt.model, sampler=sampler, steps=steps)
    noised = g.AddNoise(id="noised", latent=empty, schedule=schedule, seed=seed)
    base = g.DenoiseLoop(
        id="base", model=ckpt.model, positive=positive, negative=negative_, latent=noised, cfg=cfg
    )
    upscaled = g.LatentUpscale(id="upscaled", latent=base, factor=upscale, mode="bilinear")
    hires_schedule = g.Scheduler(id="hires_schedule", model=ckpt.model, sampler=sampler, steps=hires_steps)
    # seed=None continues the random stream where the first pass left it.
    renoised = g.AddNoise(
        id="renoised", latent=upscaled, schedule=hires_schedule, seed=None, strength=hires_strength
    )
    refined = g.DenoiseLoop(
        id="refined", model=ckpt.model, positive=positive, negative=negative_, latent=renoised, cfg=cfg
    )
    decoded = g.VAEDecode(id="decoded", vae=ckpt.vae, latent=refined)
    g.SaveImage(id="save", image=decoded, filename_prefix="hires_fix")
    return g


def main(argv: list[str] | None = None) -> sdflow.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hires-strength", type=float, default=0.5)
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    result = sdflow.run(build(), inputs={"hires_strength": args.hires_strength}, output_dir=args.output_dir)
    print(", ".join(result.files))
    return result


if __name__ == "__main__":
    main()
