"""A seed sweep from Python: the txt2img workflow loaded once and run once per seed on one runner.

The checkpoint is loaded and the prompts are encoded on the first run only; later runs take them from
the runner's caches and redo just the noise and what follows. The pictures also go on a contact sheet.

Run: python examples/seed_sweep.py [--seeds 1 2 3 4]  ->  outputs/seed_sweep/seed_NNNNN.png, sheet_NNNNN.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image as PILImage

import sdflow
from sdflow.files import write_new

HERE = Path(__file__).resolve().parent


def build() -> sdflow.Graph:
    """examples/txt2img.yaml, saving into a sub-folder of its own."""
    g = sdflow.load(HERE / "txt2img.yaml")
    g["save"]["filename_prefix"] = "seed_sweep/seed"
    return g


def main(argv: list[str] | None = None) -> list[sdflow.RunResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--output-dir", default="outputs")
    args = parser.parse_args(argv)

    graph = build()
    results = []
    for seed in args.seeds:
        result = sdflow.run(graph, inputs={"seed": seed}, output_dir=args.output_dir)
        cached = [node for node, status in result.report.status().items() if status == "cached"]
        print(f"seed {seed}: {result.files[0]}  (from cache: {', '.join(cached) or 'nothing'})")
        results.append(result)

    pictures = [r.image("decoded") for r in results]
    width, height = pictures[0].size
    sheet = PILImage.new("RGB", (width * len(pictures), height))
    for index, picture in enumerate(pictures):
        sheet.paste(picture, (index * width, 0))
    path = write_new(Path(args.output_dir, "seed_sweep"), "sheet", ".png", lambda f: sheet.save(f, "PNG"))
    print(f"contact sheet: {path}")
    return results


if __name__ == "__main__":
    main()
