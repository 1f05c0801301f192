"""Render the README's gallery: each example workflow's picture, enlarged, into docs/gallery/.

Run: python tools/gallery.py   (uses the examples' default inputs; a few seconds on a CPU)
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

import sdflow

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "docs" / "gallery"
SCALE = 4
YELLOW_SQUARE = "a yellow square on a black background"
GREEN_TRIANGLE = "a green triangle on a white background"
# (file name, workflow, inputs, output node)
PICTURES = [
    ("txt2img_red_circle.png", "txt2img.yaml", {}, "decoded"),
    (
        "txt2img_yellow_square.png",
        "txt2img.yaml",
        {"prompt": "a yellow square on a black background"},
        "decoded",
    ),
    (
        "txt2img_green_triangle.png",
        "txt2img.yaml",
        {"prompt": "a green triangle on a white background"},
        "decoded",
    ),
    ("input_red_circle.png", None, {}, None),
    ("img2img_green_circle.png", "img2img.yaml", {}, "decoded"),
    ("inpaint_yellow_circle.png", "inpaint.yaml", {}, "pasted"),
    ("hires_fix.png", "hires_fix.yaml", {}, "decoded"),
    ("sdxl_blue_triangle.png", "sdxl.yaml", {}, "decoded"),
    ("sdxl_purple_circle.png", "sdxl.yaml", {"prompt": "a purple circle on a green background"}, "decoded"),
    ("sdxl_refiner_red_square.png", "sdxl_refiner.yaml", {}, "decoded"),
    ("sdxl_img2img_green_circle.png", "img2img.yaml", {"checkpoint": "builtin:shapes-xl"}, "decoded"),
    ("sdxl_inpaint_yellow_circle.png", "inpaint.yaml", {"checkpoint": "builtin:shapes-xl"}, "pasted"),
]


def main() -> None:
    """Run each example once and save its picture, enlarged with nearest-neighbour sampling."""
    torch.set_num_threads(1)
    GALLERY.mkdir(parents=True, exist_ok=True)
    runner = sdflow.Runner(device="cpu", dtype="fp32")
    for name, workflow, inputs, node in PICTURES:
        if workflow is None:
            picture = Image.open(ROOT / "examples" / "inputs" / "red_circle.png").convert("RGB")
        else:
            graph = sdflow.load(ROOT / "examples" / workflow)
            picture = runner.run(graph, inputs=inputs, outputs=[node]).image(node)
        width, height = picture.size
        scale = SCALE * 64 // max(width, height)
        picture.resize((width * scale, height * scale), Image.NEAREST).save(GALLERY / name)
        print(GALLERY / name)


if __name__ == "__main__":
    main()
