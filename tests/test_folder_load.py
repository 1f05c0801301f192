"""A diffusers folder's models are read mapped from their safetensors files: the same weights as
``from_pretrained``, and ``from_pretrained`` still takes any component the mapped read cannot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdflow.models import checkpoints, folder_load, resolver

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
CPU = torch.device("cpu")


def reference(folder: Path, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """Every model of the folder as diffusers / transformers ``from_pretrained`` loads it."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vae_dtype = torch.float32 if dtype == torch.float16 else dtype  # the tiny VAEs force_upcast
    models = {
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=vae_dtype),
    }
    if (folder / "text_encoder").is_dir():
        models["text_encoder"] = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", torch_dtype=dtype
        )
    if (folder / "text_encoder_2").is_dir():
        models["text_encoder_2"] = CLIPTextModelWithProjection.from_pretrained(
            folder, subfolder="text_encoder_2", torch_dtype=dtype
        )
    return models


def loaded_models(loaded) -> dict[str, torch.nn.Module]:
    encoders = [loaded.text_encoder, *loaded.more_text_encoders]
    names = ["text_encoder", "text_encoder_2"] if len(encoders) == 2 else ["text_encoder"]
    if loaded.family.name == "sdxl_refiner":
        names = ["text_encoder_2"]
    return {"unet": loaded.unet, "vae": loaded.vae, **dict(zip(names, encoders, strict=True))}


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, other = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == other.keys()
    for key, tensor in other.items():
        assert mine[key].dtype == tensor.dtype, key
        assert torch.equal(mine[key], tensor), key


@pytest.fixture
def mapped_reads(monkeypatch) -> list[str]:
    """The components the mapped read delivered (not None) during a test."""
    delivered: list[str] = []
    real = folder_load.mapped

    def spy(folder, *args, **kwargs):
        module = real(folder, *args, **kwargs)
        if module is not None:
            delivered.append(folder.name)
        return module

    monkeypatch.setattr(folder_load, "mapped", spy)
    return delivered


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("tiny-sd15", torch.float32),
        ("tiny-sd15", torch.float16),
        ("tiny-sdxl", torch.float32),
        ("tiny-sdxl", torch.bfloat16),
        ("tiny-sdxl-refiner", torch.float32),
    ],
)
def test_mapped_folder_weights_equal_from_pretrained(mapped_reads, name, dtype):
    folder = BUILTIN / name
    loaded = checkpoints.load(resolver.checkpoint(str(folder)), CPU, dtype)
    ours = loaded_models(loaded)
    assert sorted(mapped_reads) == sorted(ours)  # every model came through the mapped read
    for component, module in reference(folder, dtype).items():
        assert_same_weights(ours[component], module)
        assert not ours[component].training
        assert not any(p.requires_grad for p in ours[component].parameters())


def test_legacy_key_names_fall_back_to_from_pretrained(mapped_reads, tmp_path):
    """A VAE saved with the old attention names (query/key/value/proj_attn), which diffusers renames
    on load, is not taken by the mapped read, and loads as diffusers loads it."""
    folder = tmp_path / "legacy"
    shutil.copytree(BUILTIN / "tiny-sd15", folder)
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    legacy = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, tensor in load_file(weights).items():
        for new, old in legacy.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = tensor
    assert renamed.keys() != load_file(weights).keys()
    save_file(renamed, weights)

    loaded = checkpoints.load(resolver.checkpoint(str(folder)), CPU, torch.float32)
    assert sorted(mapped_reads) == ["text_encoder", "unet"]
    assert_same_weights(loaded.vae, reference(BUILTIN / "tiny-sd15", torch.float32)["vae"])


def test_a_folder_with_pickled_weights_still_loads_with_the_opt_in(mapped_reads, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(BUILTIN / "tiny-sd15", folder)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(unet), unet.with_suffix(".bin"))
    unet.unlink()

    loaded = checkpoints.load(
        resolver.checkpoint(str(folder)), CPU, torch.float32, checkpoints.LoadOptions(allow_pickle=True)
    )
    assert "unet" not in mapped_reads
    assert_same_weights(loaded.unet, reference(BUILTIN / "tiny-sd15", torch.float32)["unet"])
