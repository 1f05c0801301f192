"""What re-runs in the img2img and inpaint workflows after an edit: a new strength re-noises and
re-denoises without re-encoding; an edited picture or mask file is loaded and encoded again."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

from sdflow.graphs import load
from sdflow.runner import Runner

FAST = {"steps": 3}
AFTER_NOISE = {"noised", "denoised", "decoded", "save"}


def statuses(runner: Runner, workflow_file: Path, **inputs) -> dict[str, str]:
    result = runner.run(load(str(workflow_file)), inputs={**FAST, **inputs})
    return result.report.status()


def test_changing_only_strength_reruns_add_noise_and_what_follows(runner: Runner, examples: Path) -> None:
    workflow = examples / "img2img.yaml"
    first = statuses(runner, workflow, strength=0.5)
    assert set(first.values()) == {"ran"}
    second = statuses(runner, workflow, strength=0.8)
    assert {node for node, status in second.items() if status == "ran"} == AFTER_NOISE
    assert second["picture"] == second["encoded"] == second["ckpt"] == "cached"


def test_rewriting_the_input_image_makes_load_image_run_again(runner: Runner, examples: Path) -> None:
    workflow = examples / "img2img.yaml"
    statuses(runner, workflow)
    picture = examples / "inputs" / "red_circle.png"
    PILImage.open(picture).rotate(90).save(picture)
    after = statuses(runner, workflow)
    assert after["picture"] == "ran"
    assert after["encoded"] == "ran"
    assert after["ckpt"] == after["positive"] == "cached"


def test_rewriting_the_image_with_the_same_bytes_keeps_the_cache(runner: Runner, examples: Path) -> None:
    workflow = examples / "img2img.yaml"
    statuses(runner, workflow)
    picture = examples / "inputs" / "red_circle.png"
    picture.write_bytes(picture.read_bytes())  # new modification time, same content
    after = statuses(runner, workflow)
    assert after["picture"] == after["encoded"] == after["denoised"] == "cached"


def test_editing_the_mask_reencodes_without_reloading_the_image(runner: Runner, examples: Path) -> None:
    workflow = examples / "inpaint.yaml"
    statuses(runner, workflow)
    mask = examples / "inputs" / "red_circle_mask.png"
    PILImage.open(mask).transpose(PILImage.Transpose.FLIP_LEFT_RIGHT).save(mask)
    after = statuses(runner, workflow)
    assert after["mask"] == after["encoded"] == after["pasted"] == "ran"
    assert after["picture"] == "cached"


def test_relative_paths_mean_the_same_file_from_any_working_folder(
    runner: Runner, examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workflow = examples / "img2img.yaml"
    statuses(runner, workflow)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    after = statuses(runner, workflow)
    assert after["picture"] == after["denoised"] == "cached"
