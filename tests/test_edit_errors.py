"""Bad inputs to the image-editing workflows: one clear message naming the file, line, node and
field, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

from sdflow.cli import main


def run(workflow: Path, capsys: pytest.CaptureFixture[str], *settings: str) -> tuple[int, str]:
    """Exit code and stderr of `sdflow run` with ``--set`` for each setting (and 2 steps)."""
    argv = ["run", str(workflow), "--quiet", "--output-dir", str(workflow.parent / "out")]
    for setting in ("steps=2", *settings):
        argv += ["--set", setting]
    code = main(argv)
    return code, capsys.readouterr().err


def line_of(workflow: Path, text: str) -> int:
    """The 1-based line where ``text`` first appears in the workflow file."""
    return next(n for n, line in enumerate(workflow.read_text().splitlines(), 1) if text in line)


def test_missing_image_file(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = examples / "img2img.yaml"
    code, err = run(workflow, capsys, "image=inputs/nowhere.png")
    assert code == 2
    assert err.count("error:") == 1
    assert "node 'picture', field 'path'" in err
    assert f"img2img.yaml:{line_of(workflow, 'path: !input image')}:" in err
    assert f"image file not found: {examples / 'inputs' / 'nowhere.png'}" in err
    assert "Traceback" not in err


def test_a_folder_instead_of_an_image_file(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(examples / "img2img.yaml", capsys, "image=inputs")
    assert code == 2
    assert "node 'picture', field 'path'" in err
    assert "not a file" in err


def test_unreadable_image_file(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (examples / "inputs" / "notes.png").write_text("these are notes, not a picture")
    code, err = run(examples / "img2img.yaml", capsys, "image=inputs/notes.png")
    assert code == 2
    assert "node 'picture', field 'path'" in err
    assert "cannot read image file" in err
    assert "not a picture format" in err


def test_truncated_image_file_fails_when_loaded(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = (examples / "inputs" / "shapes.png").read_bytes()
    (examples / "inputs" / "cut.png").write_bytes(whole[: len(whole) // 2])  # the header still reads
    code, err = run(examples / "img2img.yaml", capsys, "image=inputs/cut.png")
    assert code == 2
    assert "node 'picture', field 'path'" in err
    assert "cannot read image file" in err
    assert "Traceback" not in err


def test_missing_mask_file(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(examples / "inpaint.yaml", capsys, "mask=inputs/no_mask.png")
    assert code == 2
    assert "node 'mask', field 'path'" in err
    assert "image file not found" in err


def test_mask_of_another_shape_than_the_image_is_refused(
    examples: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    PILImage.new("L", (64, 32), 255).save(examples / "inputs" / "wide_mask.png")
    workflow = examples / "inpaint.yaml"
    code, err = run(workflow, capsys, "mask=inputs/wide_mask.png")
    assert code == 2
    assert "node 'encoded', field 'mask'" in err
    assert f"inpaint.yaml:{line_of(workflow, 'mask: !link mask')}:" in err
    assert "the mask is 64x32 but the image is 64x64" in err


def test_alpha_mask_from_a_picture_without_alpha(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    workflow = examples / "inpaint.yaml"
    text = workflow.read_text().replace("path: !input mask", "path: !input mask\n    channel: alpha")
    workflow.write_text(text)
    code, err = run(workflow, capsys)
    assert code == 2
    assert "node 'mask', field 'channel'" in err
    assert "has no alpha channel" in err


def test_inpainting_model_without_a_mask(examples: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(examples / "img2img.yaml", capsys, "checkpoint=builtin:tiny-sd15-inpaint")
    assert code == 2
    assert "node 'denoised', field 'latent'" in err
    assert "9-channel inpainting model" in err
    assert "VAEEncode with a mask" in err
