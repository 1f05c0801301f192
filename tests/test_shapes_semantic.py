"""The built-in shapes models (SD 1.x and SDXL-shaped, with its refiner) draw what the prompt says:
checked on pixels, not by eye.

Colours are counted by the nearest of the training data's named colours (tools/shapes/data.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

import sdflow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CHECKPOINT = "builtin:shapes"
XL = "builtin:shapes-xl"


def _load_data_module():
    spec = importlib.util.spec_from_file_location("shapes_data", ROOT / "tools" / "shapes" / "data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


data = _load_data_module()


@pytest.fixture(scope="module")
def shapes_runner(tmp_path_factory: pytest.TempPathFactory) -> sdflow.Runner:
    return sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def _pixels(image: PILImage.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def _two_dominant(pixels: np.ndarray) -> set[str]:
    return set(list(data.nearest_color_counts(pixels))[:2])


def _count(pixels: np.ndarray, colour: str) -> int:
    return data.nearest_color_counts(pixels).get(colour, 0)


# (workflow, shape, colour, background, seed): the SD 1.x model, the SDXL one, and SDXL base + refiner
TXT2IMG_CASES = [
    ("txt2img.yaml", "circle", "red", "blue", 1),
    ("txt2img.yaml", "square", "yellow", "black", 2),
    ("txt2img.yaml", "triangle", "green", "white", 3),
    ("txt2img.yaml", "circle", "white", "purple", 4),
    ("txt2img.yaml", "square", "orange", "green", 5),
    ("txt2img.yaml", "triangle", "blue", "yellow", 6),
    ("sdxl.yaml", "triangle", "blue", "yellow", 42),
    ("sdxl.yaml", "circle", "red", "blue", 1),
    ("sdxl.yaml", "square", "green", "white", 2),
    ("sdxl.yaml", "circle", "yellow", "black", 3),
    ("sdxl.yaml", "square", "purple", "orange", 4),
    ("sdxl_refiner.yaml", "square", "red", "white", 7),
    ("sdxl_refiner.yaml", "circle", "purple", "green", 8),
    ("sdxl_refiner.yaml", "triangle", "orange", "blue", 9),
]


@pytest.mark.parametrize(("workflow", "shape", "colour", "background", "seed"), TXT2IMG_CASES)
def test_txt2img_draws_the_caption_colours(shapes_runner, workflow, shape, colour, background, seed):
    """Each workflow runs on its default built-in model (builtin:shapes, shapes-xl, shapes-xl-refiner)."""
    prompt = data.caption_for(shape, colour, background)
    result = shapes_runner.run(
        sdflow.load(EXAMPLES / workflow), inputs={"prompt": prompt, "seed": seed}, outputs=["decoded"]
    )
    pixels = _pixels(result.image("decoded"))

    assert _two_dominant(pixels) == {colour, background}, data.nearest_color_counts(pixels)


@pytest.mark.parametrize("checkpoint", [CHECKPOINT, XL])
def test_img2img_turns_the_red_circle_green(shapes_runner, checkpoint):
    source = _pixels(PILImage.open(EXAMPLES / "inputs" / "red_circle.png"))
    result = shapes_runner.run(
        sdflow.load(EXAMPLES / "img2img.yaml"),
        inputs={"checkpoint": checkpoint, "prompt": "a green circle on a blue background"},
        outputs=["decoded"],
    )
    pixels = _pixels(result.image("decoded"))

    assert _count(source, "red") > 500 and _count(source, "green") == 0
    assert _two_dominant(pixels) == {"green", "blue"}, data.nearest_color_counts(pixels)
    assert _count(pixels, "red") < _count(source, "red") // 20


@pytest.mark.parametrize("checkpoint", [CHECKPOINT, XL])
def test_inpainting_repaints_inside_the_mask_and_keeps_every_pixel_outside(shapes_runner, checkpoint):
    source = _pixels(PILImage.open(EXAMPLES / "inputs" / "red_circle.png"))
    repaint = _pixels(PILImage.open(EXAMPLES / "inputs" / "red_circle_mask.png")) > 127
    result = shapes_runner.run(
        sdflow.load(EXAMPLES / "inpaint.yaml"),
        inputs={"checkpoint": checkpoint, "prompt": "a yellow circle on a blue background"},
        outputs=["pasted"],
    )
    pixels = _pixels(result.image("pasted"))
    inside = pixels[repaint]

    assert np.array_equal(pixels[~repaint], source[~repaint])
    assert _count(inside[None], "yellow") > 300, data.nearest_color_counts(inside[None])
    assert _count(inside[None], "red") < 50
