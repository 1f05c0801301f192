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


@pytest.fixture(scope="module")
def graph_runner():
    """A CPU fp32 runner shared by a module's tests (it keeps its loaded models between them)."""
    from sdflow.runner import Runner

    return Runner(device="cpu", dtype="fp32")


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
def tool():
    """Import a script of tools/ by its path there (e.g. "make_tiny_loras.py") as a module."""
    import importlib.util

    def load(relative: str):
        path = ROOT / "tools" / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def model_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put a copy of a file into a model folder (e.g. "ComfyUI/models/loras/style.safetensors" under
    tmp_path) and make its root (the part before /models/) the only configured model root."""

    def install(relative: str, source: Path) -> Path:
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path / relative.split("/models/")[0]))
        monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "no-config.yaml"))
        return target

    return install


@pytest.fixture(scope="session")
def single_files(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, tuple[Path, Path]]:
    """Tiny LDM-layout single files with the diffusers folders of the same weights, written once per
    session by tools/make_single_files.py: name -> (file, folder). Names: sd15, sd15-inpaint, sd2,
    sd2-v, sd2-inpaint."""
    return tool("make_single_files.py").make_all(tmp_path_factory.mktemp("single_files"))


@pytest.fixture(scope="session")
def sd3_flux_files(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, dict[str, Path]]:
    """The tiny SD3 and Flux built-ins as the files users have (all-in-one, split, fp8, GGUF, LoRAs),
    written once per session by tools/make_tiny_sd3_flux_files.py: family -> name -> path."""
    if not all((BUILTIN / f"tiny-{family}" / "model_index.json").is_file() for family in ("sd3", "flux")):
        pytest.skip("the tiny SD3 / Flux built-ins are not there (tools/make_tiny_sd3_flux.py)")
    return tool("make_tiny_sd3_flux_files.py").make_all(tmp_path_factory.mktemp("sd3_flux_files"))


@pytest.fixture(scope="session")
def vision_files(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, Path]:
    """tools/make_tiny_ip_adapters.py's tiny image encoder and IP-Adapters (names: encoder, encoder_file,
    root, sd15-plain, sd15-plus, sd15-plus-bin, sdxl-plain, sdxl-plus), an unCLIP folder (unclip) and
    two 32x32 pictures at the encoder's size (picture, other): diffusers' CLIPImageProcessor resizes
    nothing."""
    from PIL import Image as PILImage

    module = tool("make_tiny_ip_adapters.py")
    out = tmp_path_factory.mktemp("vision")
    found = module.make_all(out)
    found["unclip"] = module.make_unclip(out / "unclip")
    source = PILImage.open(EXAMPLES / "inputs" / "shapes.png").convert("RGB")
    found["picture"] = out / "picture.png"
    source.resize((32, 32), PILImage.BICUBIC).save(found["picture"])
    found["other"] = out / "other.png"
    source.transpose(PILImage.ROTATE_90).resize((32, 32)).save(found["other"])
    return found


@pytest.fixture(scope="session")
def unclip_files(
    vision_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, tool
) -> dict[str, Path]:
    """The tiny unCLIP folder (vision_files' unclip) as SD 2.1 unCLIP single files in Stability's layout,
    written by tools/make_single_files.py: full (with its normaliser's mean and std), bare (without
    them, as Stability's own files), no-encoder (no embedder.*)."""
    module = tool("make_single_files.py")
    out, folder = tmp_path_factory.mktemp("unclip_files"), vision_files["unclip"]
    return {
        "full": module.write_unclip_file(folder, out / "unclip.safetensors"),
        "bare": module.write_unclip_file(folder, out / "unclip-bare.safetensors", stats=False),
        "no-encoder": module.write_unclip_file(folder, out / "unclip-vision.safetensors", encoder=False),
    }
