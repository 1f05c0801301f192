"""Goldens on disk: exact round trips, whole-folder replacement, damage detection, image inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sdflow.golden import store
from sdflow.golden.capture import GoldenError, to_array
from sdflow.golden.report import diff_array, side_by_side, to_picture
from sdflow.nodes.types import Image, Mask


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, 16, 16), dtype=np.float32)


def test_saved_golden_loads_back_bit_exact_with_its_metadata(tmp_path):
    image = _image()
    store.save(tmp_path / "g", {"decoded.image": image}, {"note": "hello"})
    golden = store.load(tmp_path / "g")
    assert np.array_equal(golden.images["decoded.image"], image)
    assert golden.images["decoded.image"].dtype == np.float32
    assert golden.meta["note"] == "hello"
    assert golden.meta["outputs"]["decoded.image"]["shape"] == [1, 3, 16, 16]


def test_saved_golden_has_a_png_for_people_to_look_at(tmp_path):
    image = _image()
    store.save(tmp_path / "g", {"decoded.image": image}, {})
    picture = PILImage.open(tmp_path / "g" / "decoded.image.png")
    expected = (np.moveaxis(image[0], 0, -1) * 255).round().astype(np.uint8)
    assert np.array_equal(np.asarray(picture), expected)


def test_recording_again_replaces_the_whole_folder(tmp_path):
    store.save(tmp_path / "g", {"old.image": _image(1)}, {})
    (tmp_path / "g" / "old.image.diff.png").write_bytes(b"stale artifact")
    store.save(tmp_path / "g", {"new.image": _image(2)}, {})
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        "golden.json",
        "new.image.npy",
        "new.image.png",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["g"]  # no temporary folders left behind


def test_a_folder_that_is_not_a_golden_is_never_replaced(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    with pytest.raises(GoldenError, match="is not a golden folder"):
        store.save(tmp_path / "g", {"image": _image()}, {})
    assert (tmp_path / "g" / "notes.txt").read_text() == "mine"


def test_loading_where_nothing_was_recorded_raises_golden_missing(tmp_path):
    with pytest.raises(store.GoldenMissing, match="no golden recorded"):
        store.load(tmp_path / "nothing")


def test_a_golden_whose_array_was_altered_is_reported_as_damaged(tmp_path):
    store.save(tmp_path / "g", {"image": _image()}, {})
    store_path = tmp_path / "g" / "image.npy"
    np.save(store_path, _image(5))
    with pytest.raises(GoldenError, match="does not match its checksum"):
        store.load(tmp_path / "g")


def test_a_golden_with_unreadable_metadata_is_reported_as_damaged(tmp_path):
    store.save(tmp_path / "g", {"image": _image()}, {})
    meta = tmp_path / "g" / "golden.json"
    meta.write_text(json.dumps({"format": 1}))
    with pytest.raises(GoldenError, match="damaged golden"):
        store.load(tmp_path / "g")


def test_images_of_every_kind_become_batch_channel_height_width_float_arrays():
    pixels = torch.rand(1, 3, 8, 8)
    picture = PILImage.fromarray((np.moveaxis(pixels[0].numpy(), 0, -1) * 255).round().astype(np.uint8))
    assert np.array_equal(to_array(Image(pixels)), pixels.numpy())
    assert to_array(Mask(torch.rand(2, 1, 8, 8))).shape == (2, 1, 8, 8)
    assert to_array(pixels[0]).shape == (1, 3, 8, 8)
    assert to_array(picture).shape == (1, 3, 8, 8)
    assert np.abs(to_array(picture) - pixels.numpy()).max() <= 0.5 / 255 + 1e-6
    assert to_array(picture.convert("L")).shape == (1, 1, 8, 8)
    assert to_array(np.zeros((8, 8))).shape == (1, 1, 8, 8)


def test_something_that_is_not_an_image_is_refused():
    with pytest.raises(TypeError, match="cannot compare a str"):
        to_array("a picture")


def test_diff_image_is_white_where_the_difference_is_largest_and_black_where_none():
    golden = np.zeros((1, 3, 4, 4), dtype=np.float32)
    actual = golden.copy()
    actual[0, 1, 2, 3] = 0.5
    heat, largest = diff_array(golden, actual)
    assert largest == 0.5
    assert heat[0, :, 2, 3].tolist() == [1.0, 1.0, 1.0]
    assert heat[0, :, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_side_by_side_shows_golden_actual_and_diff_enlarged_in_one_row():
    golden, actual = _image(1), _image(2)
    picture = side_by_side(golden, actual)
    panel = 16 * 16  # 16-pixel images are enlarged 16 times to reach 256 pixels
    assert picture.width == 3 * panel + 2 * 4
    left = np.asarray(picture)[-panel:, :panel]
    assert np.array_equal(left[::16, ::16], np.asarray(to_picture(golden)))
