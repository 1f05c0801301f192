"""Render docs/control_gallery.md's pictures: control masks and what builtin:shapes-control draws from them.

Run: python tools/control_gallery.py   (runs examples/controlnet.yaml; a few seconds on a CPU)

Each row is a mask (the caption's shape, white on black, as the ControlNet was trained on) and the
picture the example draws with it, both enlarged 4x with nearest-neighbour sampling, into docs/gallery/.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

import sdflow

ROOT = Path(__file__).resolve().parent.parent
GALLERY = ROOT / "docs" / "gallery"
EXAMPLE = ROOT / "examples" / "controlnet.yaml"
SCALE = 4
sys.path.insert(0, str(ROOT / "tools" / "shapes"))

from data import draw_mask  # noqa: E402

RED_CIRCLE = "a red circle on a blue background"
# (name, (shape, size, x0, y0) of the mask, prompt, extra inputs)
ROWS = [
    ("top_left", ("circle", 24, 4, 4), RED_CIRCLE, {}),
    ("bottom_right", ("circle", 24, 36, 36), RED_CIRCLE, {}),
    ("top_right", ("square", 26, 34, 4), "a yellow square on a black background", {}),
    ("bottom_left", ("triangle", 30, 2, 32), "a white triangle on a purple background", {}),
    ("large_centre", ("circle", 44, 10, 10), "a green circle on a white background", {}),
    ("strength_0", ("circle", 24, 4, 4), RED_CIRCLE, {"strength": 0.0}),
]


def enlarged(picture: Image.Image) -> Image.Image:
    """``picture`` at SCALE times its size, nearest-neighbour."""
    return picture.resize((picture.width * SCALE, picture.height * SCALE), Image.NEAREST)


def main() -> None:
    """Draw each row's mask, run the example on it and save both pictures."""
    torch.set_num_threads(1)
    GALLERY.mkdir(parents=True, exist_ok=True)
    runner = sdflow.Runner(device="cpu", dtype="fp32")
    graph = sdflow.load(EXAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, size, x0, y0), prompt, extra in ROWS:
            mask = draw_mask(shape, size, x0, y0)
            path = Path(tmp) / f"{name}.png"
            mask.save(path)
            inputs = {"image": str(path), "prompt": prompt, **extra}
            picture = runner.run(graph, inputs=inputs, outputs=["decoded"]).image("decoded")
            for kind, image in (("mask", mask), ("result", picture)):
                target = GALLERY / f"control_{name}_{kind}.png"
                enlarged(image.convert("RGB")).save(target, optimize=True)
                print(target)


if __name__ == "__main__":
    main()
