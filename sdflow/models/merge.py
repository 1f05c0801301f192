"""Merging two models of one architecture weight by weight, as ComfyUI's merge nodes do.

Each weight becomes ``own * first + other * second`` (computed in float32, stored in the first model's
dtype and device) with the two factors chosen per weight name; weights whose factors are (1, 0) stay
the first model's own tensors. The result is a copy-on-write tree of modules (``patch.shallow``): the
two inputs, which the model cache hands to other nodes, are never modified.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sdflow.models.patch import owned, shallow

Factors = Callable[[str], tuple[float, float] | None]  # weight name -> (own, other), None = keep


class MergeMismatch(ValueError):
    """The two models' weights do not pair up (another architecture or size)."""


def merged_copy(first: torch.nn.Module, second: torch.nn.Module, factors: Factors) -> torch.nn.Module:
    """``first`` with each floating-point weight (parameter or buffer) replaced by
    ``own * first + other * second`` for ``(own, other) = factors(name)``."""
    theirs = dict(second.named_parameters()) | dict(second.named_buffers())
    mine = dict(first.named_parameters()) | dict(first.named_buffers())
    missing = [name for name in mine if name not in theirs]
    misfit = [n for n, t in mine.items() if n in theirs and theirs[n].shape != t.shape]
    if missing or misfit:
        detail = f"{len(missing)} weights missing (e.g. {', '.join(missing[:2])})" if missing else ""
        if misfit:
            shapes = f"{misfit[0]} {list(mine[misfit[0]].shape)} vs {list(theirs[misfit[0]].shape)}"
            detail += ("; " if detail else "") + f"{len(misfit)} of another shape (e.g. {shapes})"
        raise MergeMismatch(f"the two models are not the same architecture: {detail}")
    root = shallow(first)
    fresh = {id(root)}
    with torch.no_grad():
        for name, tensor in mine.items():
            chosen = factors(name) if tensor.is_floating_point() else None
            if chosen is None or chosen == (1.0, 0.0):
                continue
            own, other = chosen
            value = own * tensor.float() + other * theirs[name].to(tensor.device, torch.float32)
            _replace(root, fresh, name, value.to(tensor.dtype))
    return root


def _replace(root: torch.nn.Module, fresh: set[int], name: str, value: torch.Tensor) -> None:
    """Put ``value`` at ``name`` in the copy ``root``, copying the modules along the path once."""
    path, _, leaf = name.rpartition(".")
    module = owned(root, fresh, path)
    if leaf in module._parameters:
        module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        module._buffers = dict(module._buffers)
        module._buffers[leaf] = value
