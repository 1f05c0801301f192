"""The SD3 / Flux fixture files hold the built-ins' weights in the layouts users have: read back with
diffusers' and transformers' own loaders and converters, not with sdflow's key tables."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdflow.models.dit_keys import flux_mapping


def _equal(loaded: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert sorted(loaded) == sorted(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key].to(value.dtype), value), key


def _transformer(folder: Path, family: str) -> torch.nn.Module:
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
    return cls.from_pretrained(folder, subfolder="transformer")


def diffusers_flux_converter(config: dict):
    """diffusers' own BFL -> diffusers converter, with its full-size width (3072) replaced by the
    model's: it splits a single block's fused linear1 at that hard-coded width."""
    from diffusers.loaders import single_file_utils

    source = inspect.getsource(single_file_utils.convert_flux_transformer_checkpoint_to_diffusers)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    assert "inner_dim = 3072" in source
    namespace = dict(vars(single_file_utils))
    exec(source.replace("inner_dim = 3072", f"inner_dim = {width}"), namespace)
    return namespace["convert_flux_transformer_checkpoint_to_diffusers"]


def test_the_sd3_transformer_files_load_in_diffusers_to_the_folder_weights(sd3_flux_files) -> None:
    from diffusers import SD3Transformer2DModel

    files = sd3_flux_files["sd3"]
    reference = _transformer(files["folder"], "sd3").state_dict()
    for name in ("transformer", "all_in_one"):
        loaded = SD3Transformer2DModel.from_single_file(
            str(files[name]), config=str(files["folder"]), subfolder="transformer", local_files_only=True
        )
        _equal(loaded.state_dict(), reference)


def test_the_flux_transformer_files_convert_in_diffusers_to_the_folder_weights(sd3_flux_files) -> None:
    files = sd3_flux_files["flux"]
    model = _transformer(files["folder"], "flux")
    convert = diffusers_flux_converter(dict(model.config))
    for name in ("transformer", "all_in_one"):
        state = {k: v for k, v in load_file(files[name]).items() if not k.startswith(("text_", "first_"))}
        _equal(convert(state), model.state_dict())
    schnell = convert(load_file(files["schnell"]))
    assert not any("guidance" in k for k in schnell)
    _equal(schnell, {k: v for k, v in model.state_dict().items() if "guidance" not in k})


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_fp8_file_is_the_transformer_in_float8(sd3_flux_files, family: str) -> None:
    files = sd3_flux_files[family]
    full, fp8 = load_file(files["transformer"]), load_file(files["fp8"])
    assert sorted(full) == sorted(fp8)
    assert {t.dtype for t in fp8.values()} == {torch.float8_e4m3fn}
    for key, value in full.items():
        assert torch.equal(fp8[key], value.to(torch.float8_e4m3fn)), key


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_vae_files_load_in_diffusers_to_the_folder_vae(sd3_flux_files, family: str) -> None:
    from diffusers import AutoencoderKL

    files = sd3_flux_files[family]
    reference = AutoencoderKL.from_pretrained(files["folder"], subfolder="vae").state_dict()
    for name in ("vae", "all_in_one"):
        vae = AutoencoderKL.from_single_file(
            str(files[name]), config=str(files["folder"]), subfolder="vae", local_files_only=True
        )
        _equal(vae.state_dict(), reference)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_text_encoder_files_load_in_transformers_to_the_folder_encoders(
    sd3_flux_files, family: str, tmp_path: Path
) -> None:
    import transformers
    from diffusers.loaders import single_file_utils as sfu

    files = sd3_flux_files[family]
    folder = files["folder"]
    all_in_one = load_file(files["all_in_one"])
    for sub in sorted(p.name for p in folder.glob("text_encoder*")):
        config = transformers.AutoConfig.from_pretrained(folder / sub)
        model = getattr(transformers, config.architectures[0]).from_pretrained(folder / sub)
        name = {"CLIPTextModel": "clip_l", "T5EncoderModel": "t5xxl"}.get(config.architectures[0])
        name = name or ("clip_l" if sub == "text_encoder" else "clip_g")
        # the file beside the folder's config, read by transformers itself (its key handling)
        copy = tmp_path / family / sub
        copy.mkdir(parents=True)
        shutil.copy(folder / sub / "config.json", copy / "config.json")
        shutil.copy(files[name], copy / "model.safetensors")
        _equal(type(model).from_pretrained(copy).state_dict(), model.state_dict())
        prefix = f"text_encoders.{name}.transformer."
        if name == "t5xxl":
            inner = sfu.convert_sd3_t5_checkpoint_to_diffusers(all_in_one)
        else:
            inner = sfu.convert_ldm_clip_checkpoint(all_in_one, remove_prefix=prefix)
        assert inner, name
        save_file(inner, copy / "model.safetensors")
        _equal(type(model).from_pretrained(copy).state_dict(), model.state_dict())


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_gguf_file_dequantizes_near_the_folder_weights(sd3_flux_files, family: str) -> None:
    pytest.importorskip("gguf")
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    files = sd3_flux_files[family]
    model = _transformer(files["folder"], family)
    state = {k: dequantize_gguf_tensor(v).float() for k, v in load_gguf_checkpoint(files["gguf"]).items()}
    quantized = [k for k, v in load_gguf_checkpoint(files["gguf"]).items() if v.dtype == torch.uint8]
    assert quantized  # Q8_0 blocks, not a float copy
    if family == "sd3":
        from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

        converted = convert_sd3_transformer_checkpoint_to_diffusers(state)
    else:
        converted = diffusers_flux_converter(dict(model.config))(state)
    reference = model.state_dict()
    assert sorted(converted) == sorted(reference)
    for key, value in reference.items():  # Q8_0: one scale per 32 values, 8-bit steps
        step = value.abs().max() / 127
        assert (converted[key] - value).abs().max() <= step, key


def test_flux_mapping_reads_widths_from_the_config() -> None:
    config = {"num_attention_heads": 24, "attention_head_dim": 128}
    source = flux_mapping(config)("single_transformer_blocks.3.proj_mlp.weight")
    assert (source.key, source.kind, source.index, source.total) == (
        "single_blocks.3.linear1.weight",
        "rows",
        3 * 3072,
        3 * 3072 + 12288,
    )
