"""Procedural training data: one coloured shape on a background of another colour.

Every picture is 64x64 RGB with a caption such as ``"a red circle on a blue background"``. Generation is
deterministic given a ``numpy.random.Generator`` (or a seed).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 60, 220),
    "yellow": (245, 220, 30),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

MIN_FRACTION = 0.3
MAX_FRACTION = 0.7


def caption_for(shape: str, color: str, background: str) -> str:
    """The caption of a ``color`` ``shape`` on a ``background``-coloured background."""
    return f"a {color} {shape} on a {background} background"


def draw_shape(
    shape: str,
    color: str,
    background: str,
    size: int,
    x0: int,
    y0: int,
    image_size: int = IMAGE_SIZE,
) -> Image.Image:
    """Draw ``shape`` of side/diameter ``size`` with its bounding box's top-left corner at ``(x0, y0)``."""
    image = Image.new("RGB", (image_size, image_size), COLORS[background])
    _fill_shape(ImageDraw.Draw(image), shape, size, x0, y0, COLORS[color])
    return image


def draw_mask(shape: str, size: int, x0: int, y0: int, image_size: int = IMAGE_SIZE) -> Image.Image:
    """The mask of the shape ``draw_shape`` draws with these arguments: white (255) on black (0), RGB."""
    image = Image.new("RGB", (image_size, image_size), (0, 0, 0))
    _fill_shape(ImageDraw.Draw(image), shape, size, x0, y0, (255, 255, 255))
    return image


def _fill_shape(draw: ImageDraw.ImageDraw, shape: str, size: int, x0: int, y0: int, fill) -> None:
    box = (x0, y0, x0 + size - 1, y0 + size - 1)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon(
            [
                (x0 + (size - 1) / 2, y0),
                (x0, y0 + size - 1),
                (x0 + size - 1, y0 + size - 1),
            ],
            fill=fill,
        )
    else:
        raise ValueError(f"unknown shape {shape!r}")


Layout = tuple[str, str, str, int, int, int]


def random_layout(rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> Layout:
    """One random ``(shape, colour, background, size, x0, y0)``: ``draw_shape``'s arguments."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    color_index, background_index = rng.choice(len(COLOR_NAMES), size=2, replace=False)
    color, background = COLOR_NAMES[color_index], COLOR_NAMES[background_index]
    size = int(rng.integers(round(MIN_FRACTION * image_size), round(MAX_FRACTION * image_size) + 1))
    x0 = int(rng.integers(0, image_size - size + 1))
    y0 = int(rng.integers(0, image_size - size + 1))
    return shape, color, background, size, x0, y0


def random_sample(rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> tuple[Image.Image, str]:
    """One random picture and its caption."""
    shape, color, background, size, x0, y0 = random_layout(rng, image_size)
    image = draw_shape(shape, color, background, size, x0, y0, image_size)
    return image, caption_for(shape, color, background)


def make_dataset(count: int, seed: int = 0, image_size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[str]]:
    """``count`` pictures as a uint8 array (N, H, W, 3) and their captions, deterministic given ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    captions: list[str] = []
    for i in range(count):
        image, caption = random_sample(rng, image_size)
        images[i] = np.asarray(image)
        captions.append(caption)
    return images, captions


def _nearest(pixels: np.ndarray) -> np.ndarray:
    """The nearest named colour of each of the (N, 3) ``pixels``, as indexes into ``COLOR_NAMES``."""
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    return ((pixels.astype(np.float32)[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)


def nearest_colors(image: np.ndarray) -> np.ndarray:
    """Each pixel's nearest named colour, as an index into ``COLOR_NAMES`` (an (H, W) array)."""
    return _nearest(image.reshape(-1, 3)).reshape(image.shape[:-1])


def nearest_color_counts(image: np.ndarray) -> dict[str, int]:
    """Count the pixels of an image (any shape with RGB last, or flat RGB values) by their nearest named
    colour, most frequent first."""
    counts = np.bincount(_nearest(np.asarray(image).reshape(-1, 3)), minlength=len(COLORS))
    order = np.argsort(-counts, kind="stable")
    return {COLOR_NAMES[i]: int(counts[i]) for i in order if counts[i] > 0}


def color_centroid(image: np.ndarray, color: str) -> tuple[float, float] | None:
    """``(x, y)`` centroid of the pixels of an (H, W, 3) uint8 image nearest to ``color`` (None: none are)."""
    ys, xs = np.nonzero(nearest_colors(image) == COLOR_NAMES.index(color))
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())
