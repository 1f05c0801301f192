"""Re-running a picture: SaveImage embeds the workflow, its inputs and the folder relative paths
resolved against; `sdflow run PICTURE.png` and `sdflow.load` give the same pixels back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

import sdflow
from sdflow.cli import main

FAST = ["--set", "steps=2", "--quiet"]


def sdflow_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def pixels(path: str | Path) -> np.ndarray:
    with PILImage.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_running_an_img2img_picture_reproduces_its_pixels(examples, tmp_path, capsys):
    code, out, _ = sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--set", "seed=3", "--output-dir", str(tmp_path / "a"),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0
    first = out.split()[0]
    code, out, err = sdflow_cli("run", first, "--quiet", "--output-dir", str(tmp_path / "b"), capsys=capsys)
    assert code == 0, err
    second = out.split()[0]
    assert np.array_equal(pixels(first), pixels(second))
    with PILImage.open(second) as picture:  # the second picture re-runs as well: same workflow, same inputs
        assert json.loads(picture.text["sdflow:inputs"])["seed"] == 3


def test_set_overrides_the_inputs_a_picture_recorded(examples, tmp_path, capsys):
    sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--output-dir", str(tmp_path / "a"), capsys=capsys
    )
    first = next((tmp_path / "a").glob("*.png"))
    code, out, _ = sdflow_cli(
        "run", str(first), "--quiet", "--set", "seed=9", "--output-dir", str(tmp_path / "b"), capsys=capsys
    )
    assert code == 0
    assert not np.array_equal(pixels(first), pixels(out.split()[0]))


def test_load_gives_the_graph_with_the_recorded_inputs_as_defaults(examples, tmp_path, capsys):
    sdflow_cli(  # fp32 like the runner below: 'auto' may pick bf16 on a CPU with native bf16
        "run",
        str(examples / "img2img.yaml"),
        *FAST,
        "--dtype",
        "fp32",
        "--output-dir",
        str(tmp_path / "a"),
        capsys=capsys,
    )
    first = next((tmp_path / "a").glob("*.png"))
    graph = sdflow.load(first)
    assert graph.inputs["steps"].default == 2
    assert graph.base_dir == str(examples.resolve())
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path / "c"))
    result = runner.run(graph)
    assert np.array_equal(np.asarray(result.image("decoded")), pixels(first))


def test_a_picture_whose_folder_moved_resolves_paths_beside_itself(examples, tmp_path, capsys):
    """The recorded folder is gone: paths resolve against the picture's folder (shipped with its inputs)."""
    sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--output-dir", str(tmp_path / "a"), capsys=capsys
    )
    first = next((tmp_path / "a").glob("*.png"))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(first, shipped / "picture.png")
    shutil.copytree(examples / "inputs", shipped / "inputs")
    shutil.rmtree(examples)
    assert sdflow.load(shipped / "picture.png").base_dir == str(shipped.resolve())
    code, out, err = sdflow_cli(
        "run", str(shipped / "picture.png"), "--quiet", "--output-dir", str(tmp_path / "b"), capsys=capsys
    )
    assert code == 0, err
    assert np.array_equal(pixels(first), pixels(out.split()[0]))


def test_a_missing_input_file_is_named_with_its_resolved_path(examples, tmp_path, capsys):
    sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--output-dir", str(tmp_path / "a"), capsys=capsys
    )
    first = next((tmp_path / "a").glob("*.png"))
    (examples / "inputs" / "red_circle.png").unlink()
    code, _, err = sdflow_cli("run", str(first), "--quiet", capsys=capsys)
    assert code == 2
    assert "node 'picture', field 'path'" in err and str(examples.resolve() / "inputs") in err
    assert "Traceback" not in err


def test_validate_and_golden_accept_a_picture(examples, tmp_path, capsys):
    sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--output-dir", str(tmp_path / "a"), capsys=capsys
    )
    first = next((tmp_path / "a").glob("*.png"))
    code, out, _ = sdflow_cli("validate", str(first), capsys=capsys)
    assert code == 0 and "valid (10 nodes)" in out
    goldens = str(tmp_path / "goldens")
    assert sdflow_cli("golden", "update", str(first), "--dir", goldens, capsys=capsys)[0] == 0
    code, out, _ = sdflow_cli("golden", "check", str(first), "--dir", goldens, capsys=capsys)
    assert code == 0 and "1 passed" in out


def _png(path: Path, chunks: dict[str, str]) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    PILImage.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ({}, "holds no sdflow workflow"),
        ({"prompt": "{}", "workflow": "{}"}, "sdflow import comfy"),
        ({"parameters": "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7"}, "A1111 generation parameters"),
    ],
)
def test_a_png_without_an_sdflow_workflow_is_a_clear_error(tmp_path, capsys, chunks, expected):
    picture = _png(tmp_path / "other.png", chunks)
    for command in ("run", "validate"):
        code, _, err = sdflow_cli(command, str(picture), capsys=capsys)
        assert code == 2
        assert expected in err and str(picture) in err
        assert "Traceback" not in err and "utf-8" not in err


def test_a_jpeg_is_neither_yaml_nor_an_sdflow_png(tmp_path, capsys):
    picture = tmp_path / "photo.jpg"
    PILImage.new("RGB", (8, 8), (200, 10, 10)).save(picture)
    code, _, err = sdflow_cli("run", str(picture), capsys=capsys)
    assert code == 2
    assert "not a workflow: neither UTF-8 YAML text nor a PNG that sdflow saved" in err


def test_a_picture_saved_as_yaml_elsewhere_keeps_naming_the_same_files(examples, tmp_path, capsys):
    sdflow_cli(
        "run", str(examples / "img2img.yaml"), *FAST, "--output-dir", str(tmp_path / "a"), capsys=capsys
    )
    first = next((tmp_path / "a").glob("*.png"))
    saved = sdflow.load(first).save(tmp_path / "elsewhere" / "again.yaml")
    assert "../examples/inputs/red_circle.png" in saved.read_text()
    code, out, err = sdflow_cli(
        "run", str(saved), "--quiet", "--output-dir", str(tmp_path / "b"), capsys=capsys
    )
    assert code == 0, err
    assert np.array_equal(pixels(first), pixels(out.split()[0]))
