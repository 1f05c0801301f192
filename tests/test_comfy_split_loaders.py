"""ComfyUI's split-layout loaders (UNETLoader, DualCLIPLoader, TripleCLIPLoader, CLIPLoader) import as
LoadDiffusionModel and LoadTextEncoders, in the shape published Flux workflows have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdflow.formats.comfy_json import read
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
