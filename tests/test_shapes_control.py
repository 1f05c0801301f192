"""builtin:shapes-control puts builtin:shapes' shape where the control picture's blob is: checked on
pixels (the centroid of the caption colour), through examples/controlnet.yaml.

The control pictures are masks as the ControlNet was trained on (tools/shapes/train_control.py): the
caption's shape, white on black. The captions and seeds here are not the ones training checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

import sdflow
from sdflow.models import resolver

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "controlnet.yaml"
SIZE, STEPS = 24, 12
CORNERS = {"top-left": (4, 4), "bottom-right": (36, 36)}
# (shape, colour, background, seed)
CASES = [
    ("circle", "green", "white", 3),
    ("square", "blue", "orange", 5),
    ("triangle", "purple", "yellow", 8),
]


@pytest.fixture(scope="module")
def data(tool):
    """tools/shapes/data.py: the training data's shapes, masks and colours."""
    return tool("shapes/data.py")


@pytest.fixture(scope="module")
def masks(tmp_path_factory: pytest.TempPathFactory, data) -> dict[tuple[str, str], str]:
    """The control picture of each (shape, corner): the shape's mask, 24 px, 4 px from the corner."""
    folder = tmp_path_factory.mktemp("masks")
    paths = {}
    for shape in data.SHAPES:
        for corner, (x0, y0) in CORNERS.items():
            path = folder / f"{shape}_{corner}.png"
            data.draw_mask(shape, SIZE, x0, y0).save(path)
            paths[shape, corner] = str(path)
    return paths


def _draw(runner: sdflow.Runner, text: str | None = None, **inputs) -> np.ndarray:
    graph = sdflow.load(EXAMPLE) if text is None else sdflow.loads(text, str(EXAMPLE))
    result = runner.run(graph, inputs={"steps": STEPS, **inputs}, outputs=["decoded"])
    return np.asarray(result.image("decoded").convert("RGB"))


def _uncontrolled() -> str:
    """The example with the DenoiseLoop taking the plain prompts (no ApplyControlNet on its way)."""
    text = EXAMPLE.read_text()
    for half in ("positive", "negative"):
        assert f"{half}: !link controlled.{half}" in text
        text = text.replace(f"{half}: !link controlled.{half}", f"{half}: !link {half}")
    return text


def _in_quarter(point: tuple[float, float] | None, corner: str) -> bool:
    if point is None:
        return False
    x_ok = point[0] < 32 if "left" in corner else point[0] >= 32
    y_ok = point[1] < 32 if "top" in corner else point[1] >= 32
    return x_ok and y_ok


@pytest.mark.parametrize(("shape", "colour", "background", "seed"), CASES)
def test_the_shape_goes_where_the_blob_is_and_follows_it(
    graph_runner, data, masks, shape, colour, background, seed
):
    prompt = data.caption_for(shape, colour, background)
    centroids = {}
    for corner, (x0, y0) in CORNERS.items():
        pixels = _draw(graph_runner, image=masks[shape, corner], prompt=prompt, seed=seed)
        centroid = data.color_centroid(pixels, colour)
        centroids[corner] = centroid

        assert _in_quarter(centroid, corner), (corner, centroid, data.nearest_color_counts(pixels))
        assert math.dist(centroid, (x0 + SIZE / 2, y0 + SIZE / 2)) < 8, (corner, centroid)
        assert set(list(data.nearest_color_counts(pixels))[:2]) == {colour, background}
    # the same seed and prompt: only the control moved the shape (across the picture's diagonal)
    (left_x, top_y), (right_x, bottom_y) = centroids["top-left"], centroids["bottom-right"]
    assert right_x - left_x > 20 and bottom_y - top_y > 20, centroids


def test_strength_zero_draws_exactly_what_no_control_draws(graph_runner, masks):
    inputs = {"prompt": "a green circle on a white background", "seed": 3}
    off = _draw(graph_runner, image=masks["circle", "top-left"], strength=0.0, **inputs)
    plain = _draw(graph_runner, _uncontrolled(), **inputs)
    on = _draw(graph_runner, image=masks["circle", "top-left"], **inputs)

    assert np.array_equal(off, plain)
    assert np.abs(on.astype(int) - plain.astype(int)).max() > 50


def test_the_example_s_blob_puts_the_red_circle_top_right(graph_runner, data):
    blob = np.asarray(PILImage.open(ROOT / "examples" / "inputs" / "control_blob.png").convert("L")) > 127
    ys, xs = np.nonzero(blob)
    pixels = _draw(graph_runner)
    centroid = data.color_centroid(pixels, "red")

    assert xs.mean() >= 32 > ys.mean()
    assert _in_quarter(centroid, "top-right"), centroid
    assert math.dist(centroid, (xs.mean(), ys.mean())) < 8


def test_sdflow_models_lists_it_as_a_builtin_sd15_controlnet(tmp_path, monkeypatch, capsys):
    from sdflow.cli import main

    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["models", "controlnet"]) == 0
    lines = [line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]

    assert ["builtin:shapes-control", "SD 1.x ControlNet (diffusers folder)"] in lines
    assert resolver.resolve("controlnet", "builtin:shapes-control").name == "shapes-control"
