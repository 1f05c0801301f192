"""LoadLoRA on SD3 and Flux: diffusers/PEFT and kohya-style files patch the transformer as diffusers'
load_lora_weights + fuse_lora does (SD3's kohya files, which diffusers does not read: as the update
merged into the original-layout weights and converted by diffusers' SD3 converter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from lora_workflows import lora_node
from safetensors.torch import load_file

from sdflow.graphs import loads
from sdflow.runner import Runner

PIPELINES = {"sd3": StableDiffusion3Pipeline, "flux": FluxPipeline}
STRENGTH = 0.7


def ours(runner: Runner, family: str, file: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    """The transformer weights after LoadLoRA(file, strength_model=STRENGTH)."""
    graph = loads(lora_node(f"tiny-{family}", file, STRENGTH, 0.0), str(tmp_path / "w.yaml"))
    model = runner.run(graph, outputs=["lora0"])["lora0.model"]
    return model.unet.transformer.state_dict()


def diffusers_fused(family: str, folder: Path, file: Path) -> dict[str, torch.Tensor]:
    pipe = PIPELINES[family].from_pretrained(folder)
    pipe.load_lora_weights(str(file))
    pipe.fuse_lora(components=["transformer"], lora_scale=STRENGTH)
    pipe.unload_lora_weights()
    return pipe.transformer.state_dict()


def _close(
    got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> None:
    changed = [k for k in expected if not torch.equal(expected[k], base[k])]
    assert changed  # the LoRA does change weights
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=1e-5, msg=key)


@pytest.mark.parametrize(
    ("family", "name"), [("sd3", "lora_peft"), ("flux", "lora_peft"), ("flux", "lora_kohya")]
)
def test_lora_files_patch_as_diffusers_load_lora_weights(
    graph_runner: Runner, sd3_flux_files, family: str, name: str, tmp_path: Path
) -> None:
    files = sd3_flux_files[family]
    base = PIPELINES[family].from_pretrained(files["folder"]).transformer.state_dict()
    expected = diffusers_fused(family, files["folder"], files[name])
    _close(ours(graph_runner, family, files[name], tmp_path), expected, base)


def test_an_sd3_kohya_lora_patches_the_fused_original_weights(
    graph_runner: Runner, sd3_flux_files, tmp_path: Path
) -> None:
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    files = sd3_flux_files["sd3"]
    original = load_file(files["transformer"])
    lora: dict[str, Any] = load_file(files["lora_kohya"])
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        stem = key.removesuffix(".lora_down.weight")
        target = next(
            k
            for k in original
            if k.replace(".", "_") == stem.replace("lora_unet_", "model_diffusion_model_") + "_weight"
        )
        scale = float(lora[stem + ".alpha"]) / lora[key].shape[0]
        original[target] = original[target] + STRENGTH * scale * lora[stem + ".lora_up.weight"] @ lora[key]
    expected = convert_sd3_transformer_checkpoint_to_diffusers(original)
    base = StableDiffusion3Pipeline.from_pretrained(files["folder"]).transformer.state_dict()
    _close(ours(graph_runner, "sd3", files["lora_kohya"], tmp_path), expected, base)


def test_a_flux_kohya_lora_on_linear1_splits_onto_q_k_v_and_the_mlp(
    graph_runner: Runner, sd3_flux_files, tool, tmp_path: Path
) -> None:
    from safetensors.torch import save_file
    from test_sd3_flux_files import diffusers_flux_converter

    files = sd3_flux_files["flux"]
    base = FluxPipeline.from_pretrained(files["folder"]).transformer
    lora = tool("make_tiny_sd3_flux_files.py").kohya_lora(base, "flux", 7)  # linear1 included
    assert any("linear1" in k for k in lora)
    file = tmp_path / "flux-linear1.safetensors"
    save_file(lora, file)
    original = load_file(files["transformer"])
    for key in [k for k in lora if k.endswith(".lora_down.weight")]:
        stem = key.removesuffix(".lora_down.weight")
        target = next(
            k for k in original if "lora_unet_" + k.removesuffix(".weight").replace(".", "_") == stem
        )
        scale = float(lora[stem + ".alpha"]) / lora[key].shape[0]
        original[target] = original[target] + STRENGTH * scale * lora[stem + ".lora_up.weight"] @ lora[key]
    expected = diffusers_flux_converter(dict(base.config))(original)
    _close(ours(graph_runner, "flux", file, tmp_path), expected, base.state_dict())
