"""The per-run scope of node hooks: one run lists each model folder once (precheck, family check,
fingerprint and run share the listing), and the next run lists again, seeing what was added."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from sdflow.graphs import loads
from sdflow.models import folders
from sdflow.nodes.scope import RunScope
from sdflow.runner import Runner

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15"


def workflow(vae: str) -> str:
    """A checkpoint and a VAE, both named in the model folders, decoding an empty latent."""
    return f"""
version: 1
nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: "tiny"}}
  vae: {{type: LoadVAE, file: "{vae}"}}
  empty: {{type: EmptyLatent, width: 16, height: 16}}
  decoded: {{type: VAEDecode, vae: !link vae, latent: !link empty}}
  own: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link empty}}
"""


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ComfyUI models folder holding tiny-sd15 as checkpoint 'tiny' and its VAE as 'tiny-vae'."""
    root = tmp_path / "ComfyUI" / "models"
    shutil.copytree(BUILTIN, root / "checkpoints" / "tiny")
    shutil.copytree(BUILTIN / "vae", root / "vae" / "tiny-vae")
    monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path / "ComfyUI"))
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "no-config.yaml"))
    return root


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each model folder (by name) is listed from disk."""
    counted: Counter[str] = Counter()
    real = folders._listing

    def listing(folder: Path) -> list[Path]:
        counted[folder.name] += 1
        return real(folder)

    monkeypatch.setattr(folders, "_listing", listing)
    return counted


def test_one_run_lists_each_model_folder_once(
    runner: Runner, models: Path, listings: Counter[str], tmp_path: Path
) -> None:
    result = runner.run(loads(workflow("tiny-vae"), str(tmp_path / "w.yaml")))
    assert result.report.status() == {n: "ran" for n in ("ckpt", "empty", "own", "vae", "decoded")}
    assert listings == {"checkpoints": 1, "vae": 1}


def test_the_next_run_lists_again_and_sees_a_model_added_between_runs(
    runner: Runner, models: Path, listings: Counter[str], tmp_path: Path
) -> None:
    runner.run(loads(workflow("tiny-vae"), str(tmp_path / "w.yaml")))
    shutil.copytree(BUILTIN / "vae", models / "vae" / "added-vae")
    second = runner.run(loads(workflow("added-vae"), str(tmp_path / "w.yaml")))
    assert second.report.status()["vae"] == "ran"
    assert second.report.status()["ckpt"] == "cached"
    assert listings == {"checkpoints": 2, "vae": 2}


def test_a_scope_remembers_a_value_once_and_not_a_failure() -> None:
    scope, calls = RunScope(), []

    def compute() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise LookupError("not yet")
        return len(calls)

    with pytest.raises(LookupError):
        scope.remember("key", compute)
    assert scope.remember("key", compute) == 2
    assert scope.remember("key", compute) == 2
    assert len(calls) == 2
