"""Test set-up: no hub, one torch thread, and the shared fixtures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BUILTIN = ROOT / "sdflow" / "builtin"


@pytest.fixture
def runner(tmp_path: Path):
    """A CPU fp32 runner writing into a temporary folder."""
    from sdflow.runner import Runner

    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path / "outputs"))


@pytest.fixture
def write_workflow(tmp_path: Path):
    """Write YAML text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "workflow.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of the image-editing example workflows and their inputs, free to edit."""
    folder = tmp_path / "examples"
    folder.mkdir()
    for name in ("img2img.yaml", "inpaint.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    shutil.copytree(EXAMPLES / "inputs", folder / "inputs")
    return folder


@pytest.fixture(scope="session")
def single_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Tiny LDM-layout single files with the diffusers folders of the same weights, written once per
    session by tools/make_single_files.py: name -> (file, folder). Names: sd15, sd15-inpaint, sd2,
    sd2-v, sd2-inpaint."""
    import importlib.util

    tool = ROOT / "tools" / "make_single_files.py"
    spec = importlib.util.spec_from_file_location("make_single_files", tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_all(tmp_path_factory.mktemp("single_files"))
