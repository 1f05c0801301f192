"""img2img in Python: the graph of examples/img2img.yaml built node for node: redraw a picture at a
chosen strength, keeping its layout.

Run: python examples/img2img.py [--strength 0.5] [--image my.png]  ->  outputs/img2img_NNNNN.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import sdflow

YAML = "img2img.yaml"  # the workflow this file builds (tests compare the two node for node)


def build() -> sdflow.Graph:
    """Picture + prompt -> picture. ``file=__file__``: relative paths resolve against this folder."""
    g = sdflow.Graph(file=__file__)
    image = g.input("image", "inputs/red_circle.png")
    prompt = g.input("prompt", "a green circle on a blue background")
    negative = g.input("negative", "")
    seed = g.input("seed", 42)
    steps = g.input("steps", 20)
    strength = g.input("strength", 0.6)
    cfg = g.input("cfg", 4.0)
    sampler = g.input("sampler", "ddim")
    checkpoint = g.input("checkpoint", "builtin:shapes")

    ckpt = g.LoadCheckpoint(id="ckpt", checkpoint=checkpoint)
    positive = g.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    negative_ = g.CLIPEncode(id="negative", clip=ckpt.clip, text=negative)
    picture = g.LoadImage(id="picture", path=image)
    encoded = g.VAEEncode(id="encoded", vae=ckpt.vae, image=picture.image, seed=seed)
    schedule = g.Scheduler(id="schedule", model=ckpt.model, sampler=sampler, steps=steps)
    # seed=None continues VAEEncode's random stream: one seed for both draws, as in diffusers.
    noised = g.AddNoise(id="noised", latent=encoded, schedule=schedule, seed=None, strength=strength)
    denoised = g.DenoiseLoop(
        id="denoised", model=ckpt.model, positive=positive, negative=negative_, latent=noised, cfg=cfg
    )
    decoded = g.VAEDecode(id="decoded", vae=ckpt.vae, latent=denoised)
    g.SaveImage(id="save", image=decoded, filename_prefix="img2img")
    return g


def main(argv: list[str] | None = None) -> sdflow.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strength", type=float, default=0.6, help="0 keeps the picture, 1 redraws it")
    parser.add_argument("--image", help="a picture file (default: examples/inputs/red_circle.png)")
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    inputs: dict[str, object] = {"strength": args.strength}
    if args.image:
        inputs["image"] = str(Path(args.image).resolve())
    result = sdflow.run(build(), inputs=inputs, output_dir=args.output_dir)
    print(", ".join(result.files))
    return result


if __name__ == "__main__":
    main()
