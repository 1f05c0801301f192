"""Model folders: names resolve in ComfyUI and A1111 layouts, with suggestions when they do not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sdflow.models import folders, resolver
from sdflow.models.folders import ModelNotFound


@pytest.fixture
def layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "webui"
    for path in (
        comfy / "models/checkpoints/sd15/dreamshaper_8.safetensors",
        comfy / "models/loras/detail.safetensors",
        comfy / "models/vae/ft-mse.safetensors",
        a1111 / "models/Stable-diffusion/realistic.ckpt",
        a1111 / "models/Lora/style.safetensors",
        a1111 / "embeddings/easynegative.safetensors",
        comfy / "models/checkpoints/notes.txt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (comfy / "models/checkpoints/folder-model").mkdir()
    (comfy / "models/checkpoints/folder-model/model_index.json").write_text("{}")
    monkeypatch.setenv("SDFLOW_MODELS", f"{comfy}:{a1111}")
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    return comfy, a1111


def test_names_resolve_in_both_layouts(layouts: tuple[Path, Path]) -> None:
    comfy, a1111 = layouts
    assert resolver.resolve("checkpoints", "dreamshaper_8.safetensors") == (
        comfy / "models/checkpoints/sd15/dreamshaper_8.safetensors"
    )
    assert resolver.resolve("checkpoints", "dreamshaper_8") == resolver.resolve(
        "checkpoints", "sd15/dreamshaper_8.safetensors"
    )
    assert resolver.resolve("checkpoints", "realistic") == a1111 / "models/Stable-diffusion/realistic.ckpt"
    assert resolver.resolve("loras", "style") == a1111 / "models/Lora/style.safetensors"
    assert resolver.resolve("embeddings", "easynegative") == a1111 / "embeddings/easynegative.safetensors"
    assert resolver.resolve("checkpoints", "folder-model") == comfy / "models/checkpoints/folder-model"


def test_listing_skips_files_that_are_not_models(layouts: tuple[Path, Path]) -> None:
    names = [m.name for m in folders.list_models("checkpoints")]
    assert names == ["folder-model", "sd15/dreamshaper_8.safetensors", "realistic.ckpt"]


def test_unknown_name_suggests_the_closest(layouts: tuple[Path, Path]) -> None:
    with pytest.raises(ModelNotFound, match=r"did you mean 'sd15/dreamshaper_8\.safetensors'"):
        resolver.resolve("checkpoints", "dreamshaper_7")


def test_config_file_lists_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m/models/vae").mkdir(parents=True)
    (tmp_path / "m/models/vae/x.safetensors").write_bytes(b"x")
    (tmp_path / "config.yaml").write_text("model_folders: [m]\n")
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "config.yaml"))
    assert resolver.resolve("vae", "x") == tmp_path / "m/models/vae/x.safetensors"


def test_no_folders_configured_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ModelNotFound, match="set SDFLOW_MODELS"):
        resolver.resolve("loras", "detail")


def _settle(root: Path) -> None:
    """Date every directory under ``root`` a minute back, as folders are that nobody is writing to."""
    past = time.time() - 60
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        os.utime(directory, (past, past))


def _names(kind: str) -> set[str]:
    return {model.name for model in folders.list_models(kind)}


def test_settled_folders_are_listed_once_and_rechecked_by_directory_mtimes(
    layouts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    comfy, a1111 = layouts
    _settle(comfy)
    _settle(a1111)
    first = _names("checkpoints")
    assert "sd15/dreamshaper_8.safetensors" in first

    real_walk = folders._walk
    monkeypatch.setattr(folders, "_walk", lambda *a: pytest.fail("listed again though nothing changed"))
    assert _names("checkpoints") == first

    monkeypatch.setattr(folders, "_walk", real_walk)
    (comfy / "models/checkpoints/sd15/new.safetensors").write_bytes(b"x")  # in a sub-folder
    assert _names("checkpoints") == first | {"sd15/new.safetensors"}
    (comfy / "models/checkpoints/folder-model/model_index.json").unlink()  # no longer a model folder
    assert "folder-model" not in _names("checkpoints")


def test_a_folder_changed_just_now_is_listed_again_every_time(
    layouts: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within its mtime's tick a directory may change without its mtime changing: not remembered."""
    _names("loras")
    calls = []
    real_walk = folders._walk
    monkeypatch.setattr(folders, "_walk", lambda *a: calls.append(1) or real_walk(*a))
    _names("loras")
    assert calls
