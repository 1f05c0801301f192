"""txt2img in Python: the graph of examples/txt2img.yaml built node for node, run, written as a PNG.

Run: python examples/txt2img.py [--seed 7] [--prompt "..."]  ->  outputs/txt2img_NNNNN.png
"""

from __future__ import annotations

import argparse

import sdflow

YAML = "txt2img.yaml"  # the workflow this file builds (tests compare the two node for node)


def build() -> sdflow.Graph:
    """Prompt -> image on the built-in tiny checkpoint; the inputs are the YAML's inputs."""
    g = sdflow.Graph()
    prompt = g.input("prompt", "a red circle on a blue background")
    negative = g.input("negative", "")
    seed = g.input("seed", 42)
    steps = g.input("steps", 20)
    cfg = g.input("cfg", 4.0)
    sampler = g.input("sampler", "ddim")
    checkpoint = g.input("checkpoint", "builtin:shapes")

    ckpt = g.LoadCheckpoint(id="ckpt", checkpoint=checkpoint)
    positive = g.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    negative_ = g.CLIPEncode(id="negative", clip=ckpt.clip, text=negative)
    empty = g.EmptyLatent(id="empty", width=64, height=64)
    schedule = g.Scheduler(id="schedule", model=ckpt.model, sampler=sampler, steps=steps)
    noised = g.AddNoise(id="noised", latent=empty.latent, schedule=schedule, seed=seed)
    denoised = g.DenoiseLoop(
        id="denoised", model=ckpt.model, positive=positive, negative=negative_, latent=noised, cfg=cfg
    )
    decoded = g.VAEDecode(id="decoded", vae=ckpt.vae, latent=denoised)
    g.SaveImage(id="save", image=decoded, filename_prefix="txt2img")
    return g


def main(argv: list[str] | None = None) -> sdflow.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prompt", default="a red circle on a blue background")
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    result = sdflow.run(
        build(), inputs={"seed": args.seed, "prompt": args.prompt}, output_dir=args.output_dir
    )
    picture = result.image("decoded")  # a PIL image, also written by the SaveImage node
    print(f"{picture.size[0]}x{picture.size[1]} image: {', '.join(result.files)}")
    return result


if __name__ == "__main__":
    main()
