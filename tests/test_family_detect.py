"""One family detection: `sdflow models` (describe) and loading agree on every built-in and single file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.models import checkpoints, controlnet, detect, resolver
from sdflow.models.describe import describe
from sdflow.models.families import SD15, Family
from sdflow.models.loaded import LoadOptions

CPU = torch.device("cpu")
# what `sdflow models` says of each shipped folder; every built-in must be listed here
BUILTIN_LABELS = {
    "shapes": "SD 1.x",
    "shapes-xl": "SDXL",
    "shapes-xl-refiner": "SDXL refiner",
    "tiny-sd15": "SD 1.x",
    "tiny-sd15-inpaint": "SD 1.x inpainting",
    "tiny-sdxl": "SDXL",
    "tiny-sdxl-refiner": "SDXL refiner",
    "tiny-sd3": "SD3",
    "tiny-flux": "Flux",
}


def _loaded_family(spec: str, config: Path | None = None) -> Family:
    """The family loading gives (a tiny single file needs its folder's configs: it is no full-size model)."""
    return checkpoints.load(resolver.checkpoint(spec), CPU, torch.float32, LoadOptions(config=config)).family


def test_every_builtin_is_described_as_the_family_it_loads_as() -> None:
    assert sorted(resolver.builtin_names()) == sorted(BUILTIN_LABELS)
    for name, label in BUILTIN_LABELS.items():
        source = resolver.checkpoint(f"builtin:{name}")
        family = _loaded_family(f"builtin:{name}")
        assert describe("checkpoints", source.path) == f"diffusers folder, {label}", name
        assert label.removesuffix(" inpainting") == family.label, name
        assert detect.checkpoint_family(f"builtin:{name}") is family, name


def test_the_builtin_controlnets_are_described_as_the_family_they_load_as() -> None:
    assert resolver.builtin_names("controlnet") == ["shapes-control", "tiny-sd15-control"]
    for name in resolver.builtin_names("controlnet"):
        folder = resolver.resolve("controlnet", f"builtin:{name}")
        assert describe("controlnet", folder) == "SD 1.x ControlNet (diffusers folder)", name
        assert controlnet.load(folder, CPU, torch.float32, allow_pickle=False)[1].family is SD15, name


def test_the_refiner_folder_is_labelled_a_refiner_not_sdxl() -> None:
    folder = resolver.checkpoint("builtin:tiny-sdxl-refiner").path
    assert describe("checkpoints", folder) == "diffusers folder, SDXL refiner"
    assert _loaded_family("builtin:tiny-sdxl-refiner").name == "sdxl_refiner"


def test_every_single_file_is_described_and_loaded_as_its_folder(single_files) -> None:
    for name, (file, folder) in single_files.items():
        file_label = describe("checkpoints", file).removesuffix(" (v_prediction)")
        assert describe("checkpoints", folder) == f"diffusers folder, {file_label}", name
        family = _loaded_family(str(file), config=folder)
        assert family is _loaded_family(str(folder)), name
        assert file_label.removesuffix(" inpainting") == family.label, name
        assert detect.checkpoint_family(str(file)) is family, name


def test_a_family_added_to_the_folder_rules_is_detected(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "transformer-model"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"transformer": ["diffusers", "SomeTransformer"]}))
    (folder / "transformer/config.json").write_text(json.dumps({"in_channels": 16}))
    newcomer = Family("newcomer", "Newcomer", 1024, SD15.encoders, 4096)
    rule = detect.FolderRule(newcomer, lambda facts: facts.has("transformer"))
    monkeypatch.setattr(detect, "FOLDER_RULES", [rule, *detect.FOLDER_RULES])
    assert detect.folder_family(str(folder)) is newcomer
    assert detect.known_folder_family(folder) is newcomer


def test_an_sdxl_unet_with_a_wrong_time_embedding_is_refused_before_loading(tmp_path: Path) -> None:
    folder = tmp_path / "odd-xl"
    shutil.copytree(resolver.checkpoint("builtin:tiny-sdxl").path, folder)
    config = json.loads((folder / "unet/config.json").read_text())
    config["projection_class_embeddings_input_dim"] += 1
    (folder / "unet/config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoints.BadCheckpoint, match="fits neither SDXL base"):
        checkpoints.check(resolver.checkpoint(str(folder)))
    assert detect.checkpoint_family(str(folder)) is None
    assert describe("checkpoints", folder) == "diffusers folder"


MID_K = "lora_unet_mid_block_attentions_0_attn2_to_k.lora_down.weight"


@pytest.mark.parametrize(
    ("kind", "tensors", "expected"),
    [
        ("embeddings", {"emb_params": (2, 768)}, "textual inversion, SD 1.x, 2 vectors"),
        ("embeddings", {"emb_params": (3, 1024)}, "textual inversion, SD 2.x, 3 vectors"),
        ("embeddings", {"clip_l": (1, 768), "clip_g": (1, 1280)}, "textual inversion, SDXL"),
        ("loras", {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 1280)}, "LoRA, SDXL"),
        (
            "loras",
            {MID_K: (4, 1024)},
            "LoRA, SD 2.x",
        ),
        (
            "loras",
            {MID_K: (4, 512)},
            "LoRA, context 512",
        ),
    ],
)
def test_loras_and_embeddings_are_described_with_the_family_they_were_made_for(
    kind: str, tensors: dict[str, tuple[int, ...]], expected: str, tmp_path: Path
) -> None:
    file = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in tensors.items()}, file)
    assert describe(kind, file) == expected
