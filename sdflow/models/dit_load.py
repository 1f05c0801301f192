"""Load an SD3 / Flux diffusion transformer from a file users have: safetensors (any float dtype,
fp8 included) or a ``.gguf`` quantized file, offline.

The architecture comes from a diffusers folder the user names (its ``transformer/config.json``) or,
for full-size models, from the file's shapes (``transformer_config``). Weights go straight from the
file into the module built empty (``module_fill.fill_weights`` with the ``dit_keys`` tables), in:
- ``weight_dtype`` "default": the run's dtype (fp32 on the CPU, fp16 / bf16 on GPUs);
- "fp8_e4m3fn" / "fp8_e5m2": stored in 8 bits, each layer cast to the run's dtype while it computes
  (diffusers' layerwise casting), as ComfyUI's weight_dtype does;
- "fp16" / "bf16" / "fp32": stored and run in that dtype.
A GGUF file keeps its quantized linear weights (diffusers' GGUFLinear dequantizes them per call).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdflow.models import fit
from sdflow.models.dit_detect import Parts, Transformer, find_parts
from sdflow.models.dit_keys import flux_mapping, sd3_mapping
from sdflow.models.ldm_keys import Mapping, swap_halves
from sdflow.models.module_fill import build_empty, fill_weights
from sdflow.models.weights import WeightReader

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e5m2", "fp16", "bf16", "fp32")
_STORED = {
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp32": torch.float32,
}
CLASSES = {"sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel"}
MAPPINGS: dict[str, Callable[[dict[str, Any], str], Mapping]] = {"sd3": sd3_mapping, "flux": flux_mapping}
SD3_HEAD_DIM = 64  # every released SD3 / SD3.5 model
FLUX_ROPE = (16, 56, 56)  # Flux.1's rotary axes (head dim 128)


TOO_LARGE_HINT = (
    "keep it in 8 bits (weight_dtype fp8_e4m3fn), use a .gguf quantized file, or run with --offload model"
)


class TransformerFileError(ValueError):
    """The file holds no SD3 / Flux transformer, or its shapes fit no config we can build."""


@dataclass(frozen=True)
class LoadedTransformer:
    module: torch.nn.Module
    found: Transformer
    config: dict[str, Any]


def file_shapes(path: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """A weight file's tensor shapes and its format ("gguf" or "safetensors")."""
    if path.suffix.lower() == ".gguf":
        from sdflow.models import gguf_files

        return gguf_files.shapes(path), "gguf"
    with WeightReader(path) as reader:
        return dict(reader.shapes), "safetensors"


def inspect_file(path: Path) -> Parts:
    return find_parts(file_shapes(path)[0])


def _blocks(shapes: dict[str, tuple[int, ...]], prefix: str) -> list[int]:
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in shapes if k.startswith(prefix)})


def transformer_config(found: Transformer, shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """A full-size model's diffusers config from its shapes (head width: the q/k norms', else SD3's 64)."""
    p = found.prefix
    if found.family == "sd3":
        width, channels, patch, _ = shapes[p + "x_embedder.proj.weight"]
        norm = shapes.get(p + "joint_blocks.0.x_block.attn.ln_q.weight")
        head = norm[0] if norm else SD3_HEAD_DIM
        blocks = _blocks(shapes, p + "joint_blocks.")
        dual = tuple(i for i in blocks if f"{p}joint_blocks.{i}.x_block.attn2.qkv.weight" in shapes)
        return {
            "_class_name": CLASSES["sd3"],
            "sample_size": 128,
            "patch_size": patch,
            "in_channels": channels,
            "out_channels": shapes[p + "final_layer.linear.weight"][0] // (patch * patch),
            "num_layers": len(blocks),
            "attention_head_dim": head,
            "num_attention_heads": width // head,
            "joint_attention_dim": shapes[p + "context_embedder.weight"][1],
            "caption_projection_dim": shapes[p + "context_embedder.weight"][0],
            "pooled_projection_dim": shapes[p + "y_embedder.mlp.0.weight"][1],
            "pos_embed_max_size": math.isqrt(shapes[p + "pos_embed"][1]),
            "qk_norm": "rms_norm" if norm else None,
            "dual_attention_layers": dual,
        }
    width, channels = shapes[p + "img_in.weight"]
    head = shapes[p + "double_blocks.0.img_attn.norm.query_norm.scale"][0]
    if head != sum(FLUX_ROPE):
        raise TransformerFileError(
            f"its attention heads are {head} wide, not Flux.1's {sum(FLUX_ROPE)}: the rotary axes cannot "
            "be told from the file; name the model's diffusers folder in 'config'"
        )
    return {
        "_class_name": CLASSES["flux"],
        "patch_size": 1,
        "in_channels": channels,
        "out_channels": shapes[p + "final_layer.linear.weight"][0],
        "num_layers": len(_blocks(shapes, p + "double_blocks.")),
        "num_single_layers": len(_blocks(shapes, p + "single_blocks.")),
        "attention_head_dim": head,
        "num_attention_heads": width // head,
        "joint_attention_dim": shapes[p + "txt_in.weight"][1],
        "pooled_projection_dim": shapes[p + "vector_in.in_layer.weight"][1],
        "guidance_embeds": found.variant == "dev",
        "axes_dims_rope": FLUX_ROPE,
    }


def folder_config(folder: Path, found: Transformer) -> dict[str, Any]:
    """The transformer config of a diffusers folder, for a file of ``found``'s variant."""
    path = folder / "transformer" / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransformerFileError(f"missing config file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransformerFileError(f"config file {path} is not valid JSON: {exc}") from None
    if found.family == "flux":  # a schnell file against a dev folder's config, or the other way round
        config["guidance_embeds"] = found.variant == "dev"
    return config


def load_transformer(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    weight_dtype: str = "default",
    config: Path | None = None,
) -> LoadedTransformer:
    """The transformer in ``path`` on ``device``, computing in ``dtype`` (see the module doc)."""
    import diffusers

    shapes, kind = file_shapes(path)
    found = find_parts(shapes).transformer
    if found is None:
        raise TransformerFileError(f"'{path.name}' holds no SD3 or Flux transformer")
    stored = _STORED.get(weight_dtype, dtype)
    if kind == "safetensors":  # (a GGUF file's quantized bytes are what it loads: its size on disk)
        what = f"the {found.label()} ({path.name}, in {str(stored).removeprefix('torch.')})"
        own = {k: v for k, v in shapes.items() if k.startswith(found.prefix)}  # not an all-in-one's others
        fit.check(what, fit.weight_bytes(own, stored), device, TOO_LARGE_HINT)
    else:
        fit.check(f"the {found.label()} ({path.name})", path.stat().st_size, device, TOO_LARGE_HINT)
    settings = folder_config(config, found) if config is not None else transformer_config(found, shapes)
    cls = getattr(diffusers, CLASSES[found.family])
    module = build_empty(cls.from_config, settings)
    mapping = MAPPINGS[found.family](settings, found.prefix)
    if kind == "gguf":
        _fill_gguf(module, mapping, path, dtype, device)
        return LoadedTransformer(module.eval().requires_grad_(False), found, settings)
    with WeightReader(path) as reader:
        fill_weights(module, mapping, reader, stored, device, f"{found.label()} ({path.name})")
    if stored != dtype and stored.itemsize < dtype.itemsize:  # fp8 (or fp16 under fp32): cast per layer
        cast_per_layer(module, stored, dtype)
    return LoadedTransformer(module, found, settings)


def cast_per_layer(module: torch.nn.Module, stored: torch.dtype, dtype: torch.dtype) -> None:
    """diffusers' layerwise casting on a model whose weights are all ``stored``: the layers it casts
    keep them so; what it leaves alone (patch embedding, norms, output projection) is upcast once."""
    module.enable_layerwise_casting(storage_dtype=stored, compute_dtype=dtype)
    for sub in module.modules():
        registry = getattr(sub, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("layerwise_casting") is not None:
            continue
        for param in sub.parameters(recurse=False):
            if param.dtype == stored:
                param.data = param.data.to(dtype)
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer.dtype == stored:
                setattr(sub, name, buffer.to(dtype))


def _fill_gguf(
    module: torch.nn.Module, mapping: Mapping, path: Path, dtype: torch.dtype, device: torch.device
) -> None:
    """Quantized weights stay quantized (GGUFLinear dequantizes per call); the rest in ``dtype``."""
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import GGUFParameter, _replace_with_gguf_linear

    tensors = load_gguf_checkpoint(str(path), return_tensors=True)
    state: dict[str, torch.Tensor] = {}
    missing = []
    for name, tensor in module.state_dict(keep_vars=True).items():
        source = mapping(name)
        raw = tensors.get(source.key) if source is not None else None
        if raw is None:
            missing.append(source.key if source is not None else name)
            continue
        quant = getattr(raw, "quant_type", None)
        data = raw.data if quant is not None else raw
        if source.fused:  # rows of a fused tensor: quantized blocks run along a row, so rows slice
            start = source.start(tuple(tensor.shape))
            data = data[start : start + tensor.shape[0]]
        elif source.kind == "swap":
            data = swap_halves(data)
        if quant is not None:
            state[name] = GGUFParameter(data.clone().to(device), quant_type=quant)
        else:
            state[name] = data.to(device, dtype)
    if missing:
        raise TransformerFileError(f"'{path.name}': {len(missing)} weights missing (e.g. {missing[:3]})")
    _replace_with_gguf_linear(module, dtype, state)
    for name, value in state.items():
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if isinstance(value, GGUFParameter):
            owner._parameters[leaf] = value
        else:
            owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
