"""ComfyUI's split-layout loaders (UNETLoader, DualCLIPLoader, TripleCLIPLoader, CLIPLoader) import as
LoadDiffusionModel and LoadTextEncoders, in the shape published Flux workflows have."""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from pathlib import Path

import pytest
import torch

from sdflow.formats.comfy_json import read
from sdflow.graphs.model import Link, NodeSpec
from sdflow.interop.comfy import ConversionError, convert

FLUX_API = {
    "10": {
        "class_type": "UNETLoader",
        "inputs": {"unet_name": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn_fast"},
    },
    "11": {
        "class_type": "DualCLIPLoader",
        "inputs": {
            "clip_name1": "t5xxl_fp16.safetensors",
            "clip_name2": "clip_l.safetensors",
            "type": "flux",
        },
    },
    "12": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["11", 0]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 1,
            "steps": 4,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["6", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["12", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flux", "images": ["8", 0]}},
}


def _convert(tmp_path: Path, graph: dict):
    path = tmp_path / "workflow_api.json"
    path.write_text(json.dumps(graph))
    return convert(read(path), str(path))


def _nodes(conversion, type_name: str) -> list[dict]:
    return [dict(n.fields) for n in conversion.workflow.nodes.values() if n.type == type_name]


def test_a_published_flux_workflow_imports_its_split_loaders(tmp_path: Path) -> None:
    conversion = _convert(tmp_path, FLUX_API)
    assert _nodes(conversion, "LoadDiffusionModel") == [
        {"file": "flux1-dev.safetensors", "weight_dtype": "fp8_e4m3fn"}
    ]
    assert _nodes(conversion, "LoadTextEncoders") == [
        {"files": ["t5xxl_fp16.safetensors", "clip_l.safetensors"], "kind": "flux"}
    ]


def test_sd3_triple_loader_and_unknown_types_are_reported(tmp_path: Path) -> None:
    graph = {
        "1": {
            "class_type": "TripleCLIPLoader",
            "inputs": {
                "clip_name1": "clip_l.safetensors",
                "clip_name2": "clip_g.safetensors",
                "clip_name3": "t5xxl.safetensors",
            },
        },
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {"clip_name1": "a", "clip_name2": "b", "type": "hunyuan_video"},
        },
        "3": {"class_type": "UNETLoader", "inputs": {"unet_name": "m.gguf", "weight_dtype": "int4"}},
    }
    triple = _convert(tmp_path, {"1": graph["1"]})
    assert _nodes(triple, "LoadTextEncoders")[0] == {
        "files": ["clip_l.safetensors", "clip_g.safetensors", "t5xxl.safetensors"],
        "kind": "sd3",
    }
    with pytest.raises(ConversionError) as caught:
        _convert(tmp_path, graph)
    assert "type 'hunyuan_video'" in str(caught.value) and "weight_dtype 'int4'" in str(caught.value)


def _relinked(workflow, names: dict[str, str]):
    """``workflow`` with the links to the nodes in ``names`` pointing at the node named there instead."""
    copy = deepcopy(workflow)
    for spec in copy.nodes.values():
        for key, value in spec.fields.items():
            if isinstance(value, Link) and value.node in names:
                spec.fields[key] = Link(names[value.node], value.output)
    return copy


def test_the_published_flux_workflow_runs_on_the_split_files_as_on_the_folder(
    runner, sd3_flux_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = sd3_flux_files["flux"]
    models = tmp_path / "ComfyUI" / "models"
    for relative, source in [
        ("diffusion_models/flux1-dev.safetensors", files["transformer"]),
        ("text_encoders/t5xxl_fp16.safetensors", files["t5xxl"]),
        ("text_encoders/clip_l.safetensors", files["clip_l"]),
        ("vae/ae.safetensors", files["vae"]),
    ]:
        (models / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, models / relative)
    monkeypatch.setenv("SDFLOW_MODELS", str(tmp_path / "ComfyUI"))
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "no-config.yaml"))
    api = deepcopy(FLUX_API)
    api["10"]["inputs"]["weight_dtype"] = "default"  # the folder's weights are not 8-bit
    workflow = _convert(tmp_path, api).workflow
    loaders = {}
    for node_id, spec in workflow.nodes.items():
        if spec.type in ("LoadDiffusionModel", "LoadTextEncoders", "LoadVAE"):
            spec.fields["config"] = "builtin:tiny-flux"  # a tiny model's configs: not full-size ones
            loaders[node_id] = spec.type
    assert sorted(loaders.values()) == ["LoadDiffusionModel", "LoadTextEncoders", "LoadVAE"]
    decode = next(i for i, s in workflow.nodes.items() if s.type == "VAEDecode")
    split = runner.run(workflow, outputs=[decode])[f"{decode}.image"].pixels
    folder = _relinked(workflow, dict.fromkeys(loaders, "ckpt"))
    for node_id in loaders:
        del folder.nodes[node_id]
    folder.nodes["ckpt"] = NodeSpec("ckpt", "LoadCheckpoint", {"checkpoint": "builtin:tiny-flux"})
    reference = runner.run(folder, outputs=[decode])[f"{decode}.image"].pixels
    assert split.shape == (1, 3, 64, 64)
    assert torch.equal(split, reference)
