"""Every example workflow still produces its recorded golden image (re-record: sdflow golden update
examples/*.yaml, from the repository root)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sdflow.golden import store
from sdflow.golden.harness import check_workflow
from sdflow.graphs.loading import load

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDENS = ROOT / "goldens"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_matches_its_golden(example, runner, tmp_path):
    if "LoadUpscaleModel" in example.read_text() and importlib.util.find_spec("spandrel") is None:
        pytest.skip("needs spandrel, the upscale extra (CI installs it)")
    try:
        golden = store.load(GOLDENS / example.stem)
    except store.GoldenMissing:
        pytest.fail(
            f"no golden for examples/{example.name}: run sdflow golden update examples/{example.name}"
        )
    result = check_workflow(load(example), golden, runner, artifacts_dir=tmp_path)
    assert result.passed, result.report()


def test_every_golden_belongs_to_an_example():
    orphans = sorted(p.name for p in GOLDENS.iterdir() if p.is_dir()) if GOLDENS.is_dir() else []
    assert [name for name in orphans if not (ROOT / "examples" / f"{name}.yaml").is_file()] == []


def test_there_are_examples_to_check():
    assert {path.stem for path in EXAMPLES} >= {"txt2img", "img2img", "inpaint", "hires_fix"}
