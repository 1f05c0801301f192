"""Judge a trained shapes model: generate captioned pictures, save a contact sheet, compare colours.

    HF_HUB_OFFLINE=1 python tools/shapes/check.py /tmp/shapes_run --sheet /tmp/shapes_check.png

For each picture it reports the two dominant colours (nearest named colour per pixel, counted) against
the caption's shape and background colours, and a rough shape guess from how much of its bounding box
the shape colour fills (square ~1, circle ~0.79, triangle ~0.5).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import COLORS, caption_for, nearest_color_counts

CASES: tuple[tuple[str, str, str], ...] = (
    ("circle", "red", "blue"),
    ("square", "green", "white"),
    ("triangle", "blue", "yellow"),
    ("circle", "yellow", "black"),
    ("square", "purple", "orange"),
    ("triangle", "orange", "green"),
    ("circle", "white", "purple"),
    ("square", "black", "red"),
    ("triangle", "red", "white"),
    ("circle", "green", "yellow"),
    ("square", "blue", "orange"),
    ("triangle", "yellow", "purple"),
)
TILE = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="an SD 1.x or SDXL pipeline folder")
    parser.add_argument("--sheet", type=Path, default=Path("/tmp/shapes_check.png"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def generate(
    pipe: DiffusionPipeline,
    captions: list[str],
    seeds: list[int],
    steps: int,
    cfg: float,
):
    """One picture per (caption, seed), captions-major, each with its own CPU generator."""
    prompts = [c for c in captions for _ in seeds]
    generators = [torch.Generator("cpu").manual_seed(s) for _ in captions for s in seeds]
    result = pipe(prompts, num_inference_steps=steps, guidance_scale=cfg, generator=generators)
    return result.images


def guess_shape(image: np.ndarray, color: str) -> str:
    """Classify the region of ``color`` by how much of its bounding box it fills."""
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    nearest = ((image[..., None, :].astype(np.float32) - palette) ** 2).sum(-1).argmin(-1)
    mask = nearest == list(COLORS).index(color)
    rows, cols = np.flatnonzero(mask.sum(1) >= 2), np.flatnonzero(mask.sum(0) >= 2)
    if len(rows) < 3 or len(cols) < 3:
        return "none"
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fill = box.mean()
    return "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"


def judge(image: np.ndarray, shape: str, color: str, background: str) -> tuple[list[str], str, bool]:
    """Top-two colours, shape guess, and whether the colours match the caption."""
    top = list(nearest_color_counts(image))[:2]
    return top, guess_shape(image, color), set(top) == {color, background}


def contact_sheet(images: list[Image.Image], labels: list[str], columns: int) -> Image.Image:
    """Grid of upscaled pictures, each with a short label underneath."""
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * TILE, rows * (TILE + 14)), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        x, y = (i % columns) * TILE, (i // columns) * (TILE + 14)
        sheet.paste(image.resize((TILE, TILE), Image.NEAREST), (x, y))
        draw.text((x + 2, y + TILE + 1), label, fill=(0, 0, 0))
    return sheet


def main(argv: list[str] | None = None) -> None:
    """Generate, judge, print a report and save the contact sheet."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DiffusionPipeline.from_pretrained(args.model, torch_dtype=torch.float32)  # SD 1.x or SDXL
    pipe.set_progress_bar_config(disable=True)
    captions = [caption_for(*case) for case in CASES]
    images = generate(pipe, captions, args.seeds, args.steps, args.cfg)
    labels, colour_hits, shape_hits = [], 0, 0
    for i, image in enumerate(images):
        shape, color, background = CASES[i // len(args.seeds)]
        top, guessed, ok = judge(np.asarray(image), shape, color, background)
        colour_hits += ok
        shape_hits += guessed == shape
        labels.append(f"{'ok' if ok else 'XX'} {'/'.join(top)} {guessed}")
        seed = args.seeds[i % len(args.seeds)]
        print(
            f"{captions[i // len(args.seeds)]!r} seed {seed}: expected {color}/{background}, "
            f"dominant {top}, shape guess {guessed} -> {'OK' if ok else 'MISMATCH'}"
        )
    print(f"colours match {colour_hits}/{len(images)}, shape guess matches {shape_hits}/{len(images)}")
    contact_sheet(images, labels, columns=len(args.seeds) * 2).save(args.sheet)
    print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
