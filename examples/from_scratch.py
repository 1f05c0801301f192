"""A graph built from scratch in Python: one prompt drawn with two samplers that share the checkpoint,
the prompt encodings and the start latent; run with a progress callback, then saved as YAML.

Run: python examples/from_scratch.py  ->  outputs/from_scratch/<sampler>_NNNNN.png, outputs/from_scratch.yaml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sdflow
from sdflow.nodes.ops.samplers import SamplerName

SAMPLERS: tuple[SamplerName, ...] = ("euler_ancestral", "dpmpp_2m")


def build() -> sdflow.Graph:
    """Ids are left to the builder: 'scheduler', 'scheduler_2', ... in the order nodes are added."""
    g = sdflow.Graph()
    prompt = g.input("prompt", "a yellow triangle on a green background", description="what to draw")
    seed = g.input("seed", 1)
    ckpt = g.LoadCheckpoint(checkpoint="builtin:shapes")
    positive = g.CLIPEncode(clip=ckpt.clip, text=prompt)
    negative = g.CLIPEncode(clip=ckpt.clip, text="blurry")
    empty = g.EmptyLatent(width=64, height=64)
    for sampler in SAMPLERS:
        schedule = g.Scheduler(model=ckpt.model, sampler=sampler, steps=12)
        noised = g.AddNoise(latent=empty, schedule=schedule, seed=seed)
        denoised = g.DenoiseLoop(
            model=ckpt.model, positive=positive, negative=negative, latent=noised, cfg=5.0
        )
        image = g.VAEDecode(vae=ckpt.vae, latent=denoised)
        g.SaveImage(image=image, filename_prefix=f"from_scratch/{sampler}")
    return g


def show_progress(event: sdflow.runner.core.events.Event) -> None:
    """An event listener: a line per finished node, a dot per denoising step."""
    if isinstance(event, sdflow.StepProgress):
        end = "\n" if event.index == event.total else ""
        print(f"\r  {event.node_id}: step {event.index}/{event.total}", end=end, file=sys.stderr)
    elif isinstance(event, sdflow.NodeFinished):
        print(f"  {event.node_id} ({event.type}): {event.status} in {event.seconds:.2f}s", file=sys.stderr)


def main(argv: list[str] | None = None) -> sdflow.RunResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    graph = build()
    runner = sdflow.Runner(output_dir=args.output_dir, listeners=[show_progress])
    result = runner.run(graph)
    for path in result.files:
        print(path)

    saved = graph.save(Path(args.output_dir, "from_scratch.yaml"))
    assert sdflow.load(saved).structure() == graph.structure()
    print(f"workflow: {saved} (run it again with: sdflow run {saved})")
    return result


if __name__ == "__main__":
    main()
