"""Inpainting in Python: the graph of examples/inpaint.yaml built node for node: repaint the white part
of a mask, then paste the untouched pixels back.

Run: python examples/inpaint.py [--checkpoint builtin:tiny-sd15-inpaint]  ->  outputs/inpaint_NNNNN.png
"""

from __future__ import annotations

import argparse

import sdflow

YAML = "inpaint.yaml"  # the workflow this file builds (tests compare the two node for node)


def build() -> sdflow.Graph:
    """Picture + mask + prompt -> picture. ``file=__file__``: relative paths resolve against this folder."""
    g = sdflow.Graph(file=__file__)
    image = g.input("image", "inputs/red_circle.png")
    mask_file = g.input("mask", "inputs/red_circle_mask.png")
    prompt = g.input("prompt", "a yellow circle on a blue background")
    negative = g.input("negative", "")
    seed = g.input("seed", 42)
    steps = g.input("steps", 20)
    strength = g.input("strength", 1.0)
    cfg = g.input("cfg", 4.0)
    sampler = g.input("sampler", "ddim")
    feather = g.input("feather", 2.0)
    checkpoint = g.input("checkpoint", "builtin:shapes")

    ckpt = g.LoadCheckpoint(id="ckpt", checkpoint=checkpoint)
    positive = g.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    negative_ = g.CLIPEncode(id="negative", clip=ckpt.clip, text=negative)
    picture = g.LoadImage(id="picture", path=image)
    mask = g.LoadMask(id="mask", path=mask_file)
    encoded = g.VAEEncode(id="encoded", vae=ckpt.vae, image=picture.image, mask=mask, seed=seed)
    schedule = g.Scheduler(id="schedule", model=ckpt.model, sampler=sampler, steps=steps)
    noised = g.AddNoise(id="noised", latent=encoded, schedule=schedule, seed=None, strength=strength)
    denoised = g.DenoiseLoop(
        id="denoised", model=ckpt.model, positive=positive, negative=negative_, latent=noised, cfg=cfg
    )
    decoded = g.VAEDecode(id="decoded", vae=ckpt.vae, latent=denoised)
    # The VAE round trip changes every pixel a little: put the untouched ones back.
    pasted = g.MaskBlend(
        id="pasted", background=picture.image, foreground=decoded, mask=mask, feather=feather
    )
    g.SaveImage(id="save", image=pasted, filename_prefix="inpaint")
    return g


def main(argv: list[str] | None = None) -> sdflow.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="builtin:shapes", help="a 4- or 9-channel model")
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    result = sdflow.run(build(), inputs={"checkpoint": args.checkpoint}, output_dir=args.output_dir)
    print(", ".join(result.files))
    return result


if __name__ == "__main__":
    main()
