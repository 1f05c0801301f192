"""Preprocessor nodes: Canny edges, ImageInvert, ImageToMask / MaskToImage, and their ComfyUI import."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sdflow.errors import UserError
from sdflow.formats.comfy_json import read
from sdflow.graphs import load, validate
from sdflow.interop.comfy import convert
from sdflow.nodes.base import RunContext
from sdflow.nodes.library.canny import Canny
from sdflow.nodes.library.image_mask import ImageInvert, ImageToMask, MaskToImage
from sdflow.nodes.types import Image
from sdflow.runner.core.plan import check

CTX = RunContext(device=torch.device("cpu"), dtype=torch.float32)
CIRCLE = Path(__file__).resolve().parent.parent / "examples" / "inputs" / "red_circle.png"


def circle_picture() -> np.ndarray:
    """64x64 uint8 RGB on dark red: a bright filled circle and a faint one (a weak edge)."""
    picture = np.full((64, 64, 3), (60, 10, 10), dtype=np.uint8)
    cv2.circle(picture, (22, 30), 14, (200, 180, 120), thickness=-1, lineType=cv2.LINE_AA)
    cv2.circle(picture, (48, 40), 10, (66, 14, 14), thickness=-1)
    return picture


def as_image(picture: np.ndarray) -> Image:
    return Image(torch.from_numpy(picture).permute(2, 0, 1).unsqueeze(0).float() / 255.0)


def edges(picture: np.ndarray, low: int, high: int) -> torch.Tensor:
    return Canny(image=as_image(picture), low=low, high=high).run(CTX)["image"].pixels


def test_canny_equals_opencv_canny_on_the_uint8_picture_in_all_three_channels() -> None:
    picture = circle_picture()
    expected = torch.from_numpy(cv2.Canny(picture, 100, 200)).float() / 255.0
    result = edges(picture, 100, 200)
    assert result.shape == (1, 3, 64, 64)
    assert expected.sum() > 0
    for channel in range(3):
        assert torch.equal(result[0, channel], expected)


def test_canny_thresholds_change_the_edges() -> None:
    picture = circle_picture()
    loose, strict = edges(picture, 10, 30), edges(picture, 250, 255)
    assert loose.sum() > strict.sum()
    assert torch.equal(loose[0, 0], torch.from_numpy(cv2.Canny(picture, 10, 30)).float() / 255.0)


def test_canny_keeps_the_input_dtype() -> None:
    image = Image(as_image(circle_picture()).pixels.to(torch.float64))
    assert Canny(image=image).run(CTX)["image"].pixels.dtype == torch.float64


def test_image_invert_twice_is_the_identity() -> None:
    image = as_image(circle_picture())
    once = ImageInvert(image=image).run(CTX)["image"]
    twice = ImageInvert(image=once).run(CTX)["image"]
    assert torch.allclose(once.pixels, 1.0 - image.pixels)
    assert torch.allclose(twice.pixels, image.pixels)


def test_image_to_mask_and_back_round_trips_a_channel() -> None:
    image = as_image(circle_picture())
    mask = ImageToMask(image=image, channel="green").run(CTX)["mask"]
    assert torch.equal(mask.values, image.pixels[:, 1:2])
    back = MaskToImage(mask=mask).run(CTX)["image"]
    assert back.pixels.shape == (1, 3, 64, 64)
    again = ImageToMask(image=back, channel="blue").run(CTX)["mask"]
    assert torch.equal(again.values, mask.values)


WORKFLOW = f"""
version: 1
nodes:
  picture:
    type: LoadImage
    path: "{CIRCLE}"
  edges:
    type: Canny
    image: !link picture.image
    low: {{low}}
    high: 200
  inverted:
    type: ImageInvert
    image: !link edges.image
  mask:
    type: ImageToMask
    image: !link inverted.image
    channel: red
  shown:
    type: MaskToImage
    mask: !link mask.mask
"""


def test_a_workflow_of_preprocessors_validates_and_runs(write_workflow, runner) -> None:
    workflow = load(write_workflow(WORKFLOW.format(low=100)))
    validate(workflow)
    result = runner.run(workflow)
    edge = result["edges.image"].pixels
    shown = result["shown.image"].pixels
    assert edge.sum() > 0
    assert torch.allclose(shown, 1.0 - edge)


def test_low_above_high_is_an_error_located_at_low(write_workflow) -> None:
    path = write_workflow(WORKFLOW.format(low=220))
    with pytest.raises(UserError) as caught:
        check(load(path))
    message = str(caught.value)
    assert "edges" in message and "low" in message and "must not exceed high" in message


def test_comfyui_canny_and_invert_import_with_thresholds_scaled_to_255(tmp_path) -> None:
    document = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "circle.png"}},
        "2": {
            "class_type": "Canny",
            "inputs": {"image": ["1", 0], "low_threshold": 0.4, "high_threshold": 0.8},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {"class_type": "ImageToMask", "inputs": {"image": ["3", 0], "channel": "green"}},
        "5": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 0]}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "edges"}},
    }
    path = tmp_path / "canny_api.json"
    path.write_text(json.dumps(document))
    nodes = convert(read(path), str(path)).workflow.nodes
    canny = next(spec for spec in nodes.values() if spec.type == "Canny")
    assert (canny.fields["low"], canny.fields["high"]) == (102, 204)
    mask = next(spec for spec in nodes.values() if spec.type == "ImageToMask")
    assert mask.fields["channel"] == "green"
    assert {spec.type for spec in nodes.values()} >= {"ImageInvert", "MaskToImage", "SaveImage"}
