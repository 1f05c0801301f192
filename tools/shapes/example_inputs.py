"""Draw the example workflows' input pictures: a red circle on blue, a mask over the circle, and the
ControlNet example's control picture (a white circle on black, off-centre).

Run: python tools/shapes/example_inputs.py  (writes examples/inputs/red_circle*.png, control_blob.png)
"""

from __future__ import annotations

from pathlib import Path

from data import draw_mask, draw_shape
from PIL import Image, ImageDraw

INPUTS = Path(__file__).resolve().parents[2] / "examples" / "inputs"
CIRCLE = {"size": 34, "x0": 10, "y0": 18}
MARGIN = 4
BLOB = {"size": 28, "x0": 32, "y0": 6}  # top-right: where builtin:shapes-control puts the shape


def main() -> None:
    """Write the picture and its mask (white = repaint: the circle's box plus a margin)."""
    picture = draw_shape("circle", "red", "blue", CIRCLE["size"], CIRCLE["x0"], CIRCLE["y0"])
    picture.save(INPUTS / "red_circle.png")
    mask = Image.new("L", picture.size, 0)
    x0, y0, size = CIRCLE["x0"] - MARGIN, CIRCLE["y0"] - MARGIN, CIRCLE["size"] + 2 * MARGIN
    ImageDraw.Draw(mask).rectangle((x0, y0, x0 + size - 1, y0 + size - 1), fill=255)
    mask.save(INPUTS / "red_circle_mask.png")
    draw_mask("circle", BLOB["size"], BLOB["x0"], BLOB["y0"]).save(INPUTS / "control_blob.png")


if __name__ == "__main__":
    main()
