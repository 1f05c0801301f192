"""`sdflow golden update|check`: recording, catching real changes, passing float noise, failure images."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from workflows import txt2img

from sdflow.cli import main


def workflow_text(steps: int = 4, cfg: float = 6.0, sampler: str = "ddim") -> str:
    """The tiny txt2img graph with a SaveImage node, its steps/cfg/sampler defaults as given."""
    inputs = {"prompt": '"a red circle on a blue background"', "seed": 42}
    return txt2img({**inputs, "steps": steps, "cfg": cfg, "sampler": sampler}, save=True)


@pytest.fixture(autouse=True)
def _one_thread_and_a_clean_folder(tmp_path, monkeypatch):
    """Each test starts in its own folder with one torch thread, whatever a test set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDFLOW_THREADS", raising=False)
    yield
    torch.set_num_threads(1)


def write(path: Path, **changes) -> Path:
    path.write_text(workflow_text(**changes))
    return path


def golden_run(*args: str) -> int:
    return main(["golden", *args])


@pytest.fixture
def recorded(tmp_path) -> Path:
    """The base workflow, with its golden recorded in goldens/wf/."""
    workflow = write(tmp_path / "wf.yaml")
    assert golden_run("update", str(workflow)) == 0
    return workflow


def test_update_records_an_array_a_png_and_metadata_per_image(recorded, tmp_path):
    folder = tmp_path / "goldens" / "wf"
    assert sorted(p.name for p in folder.iterdir()) == [
        "decoded.image.npy",
        "decoded.image.png",
        "golden.json",
    ]
    meta = json.loads((folder / "golden.json").read_text())
    assert meta["workflow"]["sha256"] == hashlib.sha256(recorded.read_bytes()).hexdigest()
    assert meta["inputs"]["set"] == {}
    assert meta["inputs"]["resolved"]["cfg"] == 6.0
    env = meta["environment"]
    assert env["versions"]["torch"] == torch.__version__
    assert set(env["versions"]) >= {"sdflow", "torch", "diffusers", "transformers"}
    assert (env["device"], env["dtype"], env["threads"]) == ("cpu", "fp32", 1)
    array = np.load(folder / "decoded.image.npy")
    assert array.shape == (1, 3, 64, 64) and array.dtype == np.float32


def test_update_records_exactly_the_image_the_workflow_saves_without_writing_files(
    recorded, tmp_path, runner
):
    from sdflow import load

    expected = runner.run(load(recorded), outputs=["decoded"])["decoded.image"].pixels.numpy()
    assert np.array_equal(np.load(tmp_path / "goldens" / "wf" / "decoded.image.npy"), expected)
    assert not (tmp_path / "outputs").exists()


def test_update_with_set_records_those_inputs_and_check_reuses_them(tmp_path, capsys):
    workflow = write(tmp_path / "wf.yaml")
    assert golden_run("update", str(workflow), "--set", "cfg=6.5", "--dir", "g") == 0
    assert json.loads((tmp_path / "g" / "wf" / "golden.json").read_text())["inputs"]["set"] == {"cfg": 6.5}
    assert golden_run("check", str(workflow), "--dir", "g") == 0
    write(workflow, cfg=6.5)
    assert golden_run("check", str(workflow), "--dir", "g", "--set", "cfg=6.0") == 1


def test_check_passes_an_unchanged_rerun_and_prints_a_table(recorded, capsys):
    assert golden_run("check", str(recorded)) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "decoded.image" in out
    for metric in ("max_abs", "psnr", "ssim"):
        assert metric in out
    assert "1 passed, 0 failed" in out


@pytest.mark.parametrize(
    "change",
    [
        {"cfg": 6.5},
        {"steps": 5},
        {"sampler": "euler"},  # the closest change measured: DDIM and Euler solve the same ODE
    ],
    ids=["cfg 6.0->6.5", "one more step", "sampler ddim->euler"],
)
def test_check_fails_when_the_workflow_changed(recorded, change, capsys):
    write(recorded, **change)
    assert golden_run("check", str(recorded)) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 passed, 1 failed" in out
    assert "has changed since its golden was recorded" in out


def test_check_fails_when_the_prompt_changed(recorded, capsys):
    recorded.write_text(recorded.read_text().replace("blue background", "green background"))
    assert golden_run("check", str(recorded)) == 1


def test_check_passes_with_two_threads_against_a_one_thread_golden(recorded):
    assert golden_run("check", str(recorded), "--threads", "2") == 0
    assert torch.get_num_threads() == 2  # the check really ran with two threads


def test_check_passes_in_another_process_with_two_threads(recorded, tmp_path):
    env = {**os.environ, "SDFLOW_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "sdflow.cli", "golden", "check", str(recorded)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout


def test_failed_check_writes_a_diff_image_and_a_side_by_side_beside_the_golden(recorded, tmp_path, capsys):
    folder = tmp_path / "goldens" / "wf"
    write(recorded, cfg=6.5)
    assert golden_run("check", str(recorded)) == 1
    diff = PILImage.open(folder / "decoded.image.diff.png")
    strip = PILImage.open(folder / "decoded.image.side-by-side.png")
    assert diff.size == (64, 64)
    assert np.asarray(diff).max() == 255  # scaled so the largest difference is white
    assert strip.width > 3 * strip.height - 60  # golden | actual | diff, under a caption
    assert (folder / "decoded.image.actual.png").is_file()
    out = capsys.readouterr().out
    assert str(Path("goldens/wf/decoded.image.side-by-side.png")) in out


def test_failed_check_writes_into_the_artifacts_folder_when_given(recorded, tmp_path):
    write(recorded, cfg=6.5)
    assert golden_run("check", str(recorded), "--artifacts", "failures") == 1
    assert (tmp_path / "failures" / "wf" / "decoded.image.side-by-side.png").is_file()
    assert not (tmp_path / "goldens" / "wf" / "decoded.image.diff.png").exists()


def test_a_passing_check_removes_failure_images_of_an_earlier_check(recorded, tmp_path):
    original = recorded.read_text()
    write(recorded, cfg=6.5)
    golden_run("check", str(recorded))
    recorded.write_text(original)
    assert golden_run("check", str(recorded)) == 0
    assert sorted(p.name for p in (tmp_path / "goldens" / "wf").iterdir()) == [
        "decoded.image.npy",
        "decoded.image.png",
        "golden.json",
    ]


def test_thresholds_are_set_by_flags(recorded):
    write(recorded, cfg=6.5)
    assert golden_run("check", str(recorded), "--max-abs", "0.5", "--psnr", "30", "--ssim", "0.99") == 0


def test_check_warns_when_versions_device_or_dtype_differ_from_the_golden(recorded, tmp_path, capsys):
    meta_path = tmp_path / "goldens" / "wf" / "golden.json"
    meta = json.loads(meta_path.read_text())
    meta["environment"]["versions"]["diffusers"] = "0.1.0"
    meta["environment"]["dtype"] = "fp16"
    meta_path.write_text(json.dumps(meta))
    assert golden_run("check", str(recorded)) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "diffusers" in err and "(golden: 0.1.0)" in err
    assert "dtype fp32 (golden: fp16)" in err


def test_check_without_a_golden_exits_2_and_says_how_to_record_one(tmp_path, capsys):
    workflow = write(tmp_path / "wf.yaml")
    assert golden_run("check", str(workflow)) == 2
    err = capsys.readouterr().err
    assert "no golden recorded in goldens/wf/" in err
    assert f"sdflow golden update {workflow}" in err


def test_a_workflow_error_exits_2_with_the_usual_located_message(tmp_path, capsys):
    broken = tmp_path / "wf.yaml"
    broken.write_text(workflow_text().replace("type: VAEDecode", "type: VAEDecod"))
    assert golden_run("update", str(broken)) == 2
    err = capsys.readouterr().err
    assert "wf.yaml:" in err and "VAEDecode" in err
    assert not (tmp_path / "goldens").exists()


def test_two_workflows_that_would_share_a_golden_are_refused(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = write(tmp_path / "a" / "wf.yaml"), write(tmp_path / "b" / "wf.yaml")
    assert golden_run("update", str(first), str(second)) == 2
    assert "would share the golden" in capsys.readouterr().err


def test_a_workflow_without_an_image_output_cannot_be_recorded(tmp_path, capsys):
    text = workflow_text().split("  decoded:")[0]
    workflow = tmp_path / "wf.yaml"
    workflow.write_text(text)
    assert golden_run("update", str(workflow)) == 2
    assert "no Image or Mask output to record" in capsys.readouterr().err
