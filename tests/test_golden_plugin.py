"""The pytest plugin, exercised in fresh temporary projects: record with --update-goldens, then check."""

from __future__ import annotations

import json
import textwrap

import pytest
from workflows import txt2img

from sdflow.cli import main
from sdflow.golden.harness import record_workflow

pytest_plugins = ["pytester"]

GRADIENT_TEST = """
import numpy as np

def test_gradient(golden):
    image = np.linspace(0, 1, 3 * 16 * 16, dtype=np.float32).reshape(3, 16, 16)
    golden.check("gradient", image + {offset})
"""

WORKFLOW = txt2img(
    {"cfg": 6.0},
    positive={"text": '"a red circle"'},
    schedule={"sampler": "ddim", "steps": 3},
    noised={"seed": 1},
    save=True,
)

RUN_TEST = """
from pathlib import Path

import sdflow

def test_workflow(golden, tmp_path):
    workflow = sdflow.load(Path(__file__).parent / "wf.yaml")
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    golden.check_run("wf", runner.run(workflow, inputs={{"cfg": {cfg}}}), workflow=workflow)
"""


@pytest.fixture(scope="module", autouse=True)
def _workflow_modules_loaded(tmp_path_factory):
    """Run the workflow and record a golden once in this process before any pytester session.

    pytester's in-process runs drop the modules a session imported; torch registers operator
    libraries at import and refuses a second registration, so the lazy imports of a run must
    already be in place when pytester takes its snapshot of sys.modules.
    """
    import sdflow

    folder = tmp_path_factory.mktemp("warm")
    (folder / "wf.yaml").write_text(WORKFLOW)
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(folder))
    record_workflow(sdflow.load(folder / "wf.yaml"), folder / "golden", runner)


def test_a_missing_golden_fails_and_says_how_to_record_it(pytester: pytest.Pytester):
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no golden 'gradient' in *goldens/gradient/*pytest --update-goldens*"])


def test_update_goldens_records_then_a_plain_run_checks_and_passes(pytester: pytest.Pytester):
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0))
    recording = pytester.runpytest("--update-goldens")
    recording.assert_outcomes(passed=1)
    recording.stdout.fnmatch_lines(["*sdflow: recorded 1 golden(s)*"])
    folder = pytester.path / "goldens" / "gradient"
    assert sorted(p.name for p in folder.iterdir()) == ["golden.json", "image.npy", "image.png"]
    assert json.loads((folder / "golden.json").read_text())["test"] == "test_images.py::test_gradient"
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_changed_image_fails_with_a_table_and_failure_images(pytester: pytest.Pytester):
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0))
    pytester.runpytest("--update-goldens").assert_outcomes(passed=1)
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0.01))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*FAIL gradient: image*", "*max_abs*1.000e-02*FAIL*", "*psnr*40.00 dB*FAIL*"]
    )
    assert (pytester.path / "goldens" / "gradient" / "image.side-by-side.png").is_file()
    assert (pytester.path / "goldens" / "gradient" / "image.diff.png").is_file()


def test_ini_options_set_the_golden_folder_and_the_thresholds(pytester: pytest.Pytester):
    pytester.makeini(
        textwrap.dedent(
            """
            [pytest]
            golden_dir = tests/data/goldens
            golden_max_abs = 0.05
            golden_psnr = 30
            golden_ssim = 0.99
            """
        )
    )
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0))
    pytester.runpytest("--update-goldens").assert_outcomes(passed=1)
    assert (pytester.path / "tests" / "data" / "goldens" / "gradient" / "golden.json").is_file()
    pytester.makepyfile(test_images=GRADIENT_TEST.format(offset=0.01))
    pytester.runpytest().assert_outcomes(passed=1)


def test_check_run_records_and_checks_a_workflow_run(pytester: pytest.Pytester):
    pytester.path.joinpath("wf.yaml").write_text(WORKFLOW)
    pytester.makepyfile(test_run=RUN_TEST.format(cfg=6.0))
    pytester.runpytest("--update-goldens").assert_outcomes(passed=1)
    assert (pytester.path / "goldens" / "wf" / "decoded.image.npy").is_file()
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(test_run=RUN_TEST.format(cfg=6.5))
    pytester.runpytest().assert_outcomes(failed=1)


def test_check_run_with_the_workflow_shares_goldens_with_the_command_line(
    pytester: pytest.Pytester, monkeypatch
):
    pytester.path.joinpath("wf.yaml").write_text(WORKFLOW)
    monkeypatch.chdir(pytester.path)
    assert main(["golden", "update", "wf.yaml"]) == 0
    pytester.makepyfile(test_run=RUN_TEST.format(cfg=6.0))
    pytester.runpytest().assert_outcomes(passed=1)
