"""SD3 / Flux files are told apart from their keys and shapes: family, Flux dev vs schnell, all-in-one
vs a part alone, and which text encoder a file holds (detect / dit_detect, and `sdflow models`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.models.describe import describe
from sdflow.models.dit_detect import find_parts, transformer_parts
from sdflow.models.weights import read_header


def _parts(path: Path):
    return find_parts(read_header(path).shapes())


def test_all_in_one_files_hold_every_part(sd3_flux_files) -> None:
    sd3 = _parts(sd3_flux_files["sd3"]["all_in_one"])
    assert sd3.all_in_one and sd3.transformer.family == "sd3"
    assert sd3.transformer.prefix == "model.diffusion_model."
    assert [e.name for e in sd3.text_encoders] == ["clip_l", "clip_g", "t5xxl"]
    assert [e.kind for e in sd3.text_encoders] == ["clip", "clip", "t5"]
    assert all(e.projection for e in sd3.text_encoders[:2])
    assert (sd3.vae_prefix, sd3.vae_channels) == ("first_stage_model.", 16)
    flux = _parts(sd3_flux_files["flux"]["all_in_one"])
    assert flux.all_in_one and (flux.transformer.family, flux.transformer.variant) == ("flux", "dev")
    assert [e.name for e in flux.text_encoders] == ["clip_l", "t5xxl"]
    assert describe("checkpoints", sd3_flux_files["sd3"]["all_in_one"]) == (
        "SD3 checkpoint (transformer, clip_l, clip_g, t5xxl, VAE)"
    )
    assert describe("checkpoints", sd3_flux_files["flux"]["all_in_one"]) == (
        "Flux dev checkpoint (transformer, clip_l, t5xxl, VAE)"
    )


@pytest.mark.parametrize(
    ("family", "name", "prefix", "variant", "label"),
    [
        ("sd3", "transformer", "model.diffusion_model.", "sd3", "SD3 transformer"),
        ("sd3", "fp8", "model.diffusion_model.", "sd3", "SD3 transformer"),
        ("flux", "transformer", "", "dev", "Flux dev transformer"),
        ("flux", "fp8", "", "dev", "Flux dev transformer"),
        ("flux", "schnell", "", "schnell", "Flux schnell transformer"),
    ],
)
def test_a_transformer_alone_is_told_by_family_and_variant(
    sd3_flux_files, family: str, name: str, prefix: str, variant: str, label: str
) -> None:
    parts = _parts(sd3_flux_files[family][name])
    assert not parts.all_in_one and not parts.text_encoders and parts.vae_prefix is None
    assert (parts.transformer.family, parts.transformer.prefix, parts.transformer.variant) == (
        family,
        prefix,
        variant,
    )
    assert parts.transformer.in_channels == (16 if family == "sd3" else 64)
    assert describe("diffusion_models", sd3_flux_files[family][name]) == label


def test_text_encoder_files_alone_are_told_by_kind(sd3_flux_files) -> None:
    files = sd3_flux_files["sd3"]
    found = {name: _parts(files[name]).text_encoders for name in ("clip_l", "clip_g", "t5xxl")}
    assert all(len(e) == 1 and e[0].prefix == "" for e in found.values())
    assert [found[n][0].kind for n in ("clip_l", "clip_g", "t5xxl")] == ["clip", "clip", "t5"]
    # the tiny CLIPs have no full-size width, so only their widths say which is which
    assert found["clip_l"][0].width < found["clip_g"][0].width and found["clip_l"][0].name is None
    assert describe("text_encoders", files["t5xxl"]) == "T5 text encoder"


@pytest.mark.parametrize(("width", "name"), [(768, "clip_l"), (1280, "clip_g")])
def test_a_full_size_clip_is_named_by_its_width(tmp_path: Path, width: int, name: str) -> None:
    file = tmp_path / "encoder.safetensors"
    save_file({"text_model.final_layer_norm.weight": torch.zeros(width)}, file)
    assert [e.name for e in _parts(file).text_encoders] == [name]
    assert describe("text_encoders", file) == name


def test_the_vae_alone_is_a_16_channel_vae(sd3_flux_files) -> None:
    for family in ("sd3", "flux"):
        parts = _parts(sd3_flux_files[family]["vae"])
        assert (parts.transformer, parts.vae_prefix, parts.vae_channels) == (None, "", 16)
        assert describe("vae", sd3_flux_files[family]["vae"]) == "VAE, 16 latent channels"


def test_sd_checkpoints_are_no_transformer_files(single_files) -> None:
    for file, _ in single_files.values():
        shapes = read_header(file).shapes()
        assert transformer_parts(shapes) is None
        assert find_parts(shapes).transformer is None


def test_a_gguf_transformer_is_described_with_its_quantization(sd3_flux_files) -> None:
    pytest.importorskip("gguf")
    assert describe("diffusion_models", sd3_flux_files["flux"]["gguf"]) == "Flux dev transformer, GGUF (Q8_0)"
    assert describe("diffusion_models", sd3_flux_files["sd3"]["gguf"]) == "SD3 transformer, GGUF (Q8_0)"
