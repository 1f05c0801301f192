"""Model folders: names resolve in ComfyUI and A1111 layouts, with suggestions when they do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdflow.models import folders


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
    assert folders.resolve("checkpoints", "dreamshaper_8.safetensors") == (
        comfy / "models/checkpoints/sd15/dreamshaper_8.safetensors"
    )
    assert folders.resolve("checkpoints", "dreamshaper_8") == folders.resolve(
        "checkpoints", "sd15/dreamshaper_8.safetensors"
    )
    assert folders.resolve("checkpoints", "realistic") == a1111 / "models/Stable-diffusion/realistic.ckpt"
    assert folders.resolve("loras", "style") == a1111 / "models/Lora/style.safetensors"
    assert folders.resolve("embeddings", "easynegative") == a1111 / "embeddings/easynegative.safetensors"
    assert folders.resolve("checkpoints", "folder-model") == comfy / "models/checkpoints/folder-model"


def test_listing_skips_files_that_are_not_models(layouts: tuple[Path, Path]) -> None:
    names = [m.name for m in folders.list_models("checkpoints")]
    assert names == ["folder-model", "sd15/dreamshaper_8.safetensors", "realistic.ckpt"]


def test_unknown_name_suggests_the_closest(layouts: tuple[Path, Path]) -> None:
    with pytest.raises(folders.ModelNotFound, match=r"did you mean 'sd15/dreamshaper_8\.safetensors'"):
        folders.resolve("checkpoints", "dreamshaper_7")


def test_config_file_lists_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m/models/vae").mkdir(parents=True)
    (tmp_path / "m/models/vae/x.safetensors").write_bytes(b"x")
    (tmp_path / "config.yaml").write_text("model_folders: [m]\n")
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "config.yaml"))
    assert folders.resolve("vae", "x") == tmp_path / "m/models/vae/x.safetensors"


def test_no_folders_configured_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(folders.ModelNotFound, match="set SDFLOW_MODELS"):
        folders.resolve("loras", "detail")
