"""Build a diffusers / transformers module empty (on the meta device) and fill it from a weight file
through a key mapping, each weight read once into the tensor the module keeps; the single-file,
ControlNet, transformer and unCLIP loaders share these."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from sdflow.models.ldm_keys import Mapping, Source
from sdflow.models.weights import WeightReader, is_aligned


class ArchitectureMismatch(ValueError):
    """The file's weights do not fit the configs (missing keys or other shapes)."""


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"missing config file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"config file {path} is not valid JSON: {exc}") from None


def build_empty(factory: Any, config: Any) -> torch.nn.Module:
    """``factory(config)`` with its parameters on the meta device (no memory, no random init)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return factory(config)


def plan_weights(
    module: torch.nn.Module, mapping: Mapping, shapes: dict[str, tuple[int, ...]], what: str
) -> dict[str, tuple[Source, torch.Tensor]]:
    """For each weight ``module`` still lacks, its source in the file, checked to exist and fit
    (ArchitectureMismatch listing the first few that do not)."""
    plan, missing, misfit = {}, [], []
    for name, tensor in module.state_dict(keep_vars=True).items():
        source = mapping(name)
        found = shapes.get(source.key) if source is not None else None
        if found is None:
            if tensor.is_meta:
                missing.append(source.key if source is not None else name)
            continue
        shape = tuple(tensor.shape)
        expected = source.file_shape(shape)
        fits = found == expected or (source.kind == "squeeze" and math.prod(found) == math.prod(shape))
        if not fits:
            misfit.append(f"{source.key} {list(found)} (expected {list(expected)})")
            continue
        plan[name] = (source, tensor)
    if missing or misfit:
        raise ArchitectureMismatch(_misfit_message(what, missing, misfit))
    return plan


def fill_weights(
    module: torch.nn.Module,
    mapping: Mapping,
    reader: WeightReader,
    dtype: torch.dtype,
    device: torch.device,
    what: str,
) -> None:
    """Read each of ``module``'s weights from the file into place (checked for fit first)."""
    fused: dict[str, torch.Tensor] = {}
    state = {}
    plan = plan_weights(module, mapping, reader.shapes, what)
    _forget_built(module, plan)
    for name, (source, tensor) in plan.items():
        target = dtype if tensor.is_floating_point() else tensor.dtype
        # a buffer (not a weight: no matrix product reads it) may stay the file's pages, unaligned
        lazy = not isinstance(tensor, torch.nn.Parameter) and source.kind == "same"
        if source.fused:  # q, k and v (and an MLP) share one fused tensor: read it once
            if source.key not in fused:
                fused[source.key] = reader.read(source.key, target, device)
            raw = fused[source.key]
        else:
            raw = reader.read(source.key, target, device, keep_unaligned=lazy)
        value = source.to_module(raw, tuple(tensor.shape))
        if not lazy and not is_aligned(value):  # a q/k/v slice of a fused tensor: aligned as every weight
            value = value.clone()
            reader.release(source.key)
        state[name] = value
    module.load_state_dict(state, strict=False, assign=True)
    module.to(device).eval().requires_grad_(False)


def _forget_built(module: torch.nn.Module, plan: dict[str, tuple[Source, torch.Tensor]]) -> None:
    """Tensors the module computed when it was built (buffers such as SD3's position embedding, 57 MB
    for SD3 medium in fp16) that the file replaces are made meta first, so that the computed and the
    read copy are never both in memory (diffusers' loading does the same at a time when the weights
    are not yet paged in)."""
    for name, (source, tensor) in plan.items():
        if tensor.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        meta = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")
        if leaf in owner._buffers:
            owner._buffers[leaf] = meta
        elif leaf in owner._parameters:
            owner._parameters[leaf] = torch.nn.Parameter(meta, requires_grad=False)
        else:
            continue
        plan[name] = (source, meta)


def _misfit_message(what: str, missing: list[str], misfit: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
    if misfit:
        parts.append(f"{len(misfit)} of another shape (e.g. {'; '.join(misfit[:3])})")
    return (
        f"the {what} weights do not fit the {what} config: {' and '.join(parts)}. The file may be a "
        "different architecture: name a diffusers folder with matching configs in 'config'"
    )
