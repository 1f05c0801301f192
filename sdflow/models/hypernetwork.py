"""Hypernetworks (A1111's, as ComfyUI applies them): per attention width, two small MLPs that shift the
inputs of an attention layer's key and value projections, ``x + mlp(x) * strength``.

Two file layouts are read:

- A1111's ``.pt`` (a pickle: read only with the opt-in, through torch's weights-only unpickler): a dict
  whose integer keys are widths, each holding two state dicts (key, value) of ``linear.N.weight`` /
  ``.bias`` entries, beside options ``activation_func``, ``is_layer_norm``, ``activate_output``...
- ``.safetensors``: the same tensors flattened as ``<width>.<0 key | 1 value>.<name>``, the options as
  header metadata (strings: ``"true"``/``"false"`` for flags).

Each MLP is its linear layers in order, the activation after each but the last (also after the last
with ``activate_output``), a layer norm after each with ``is_layer_norm``; dropout is a no-op at
inference. ComfyUI patches the key/value inputs of self- and cross-attention alike, wherever the
input width has an MLP pair: so does sdflow.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch

from sdflow.models import weights
from sdflow.models.patch import owned, shallow

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,  # as ComfyUI maps A1111's name
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}
OPTIONS = ("activation_func", "is_layer_norm", "activate_output")
Networks = dict[int, tuple[torch.nn.Module, torch.nn.Module]]  # width -> (key MLP, value MLP)


class HypernetworkError(ValueError):
    """A hypernetwork file sdflow cannot read or apply."""


def read(path: Path, allow_pickle: bool) -> Networks:
    """The MLPs of the hypernetwork file ``path`` (float32, on the CPU)."""
    if weights.is_pickle(path):
        if not allow_pickle:
            raise HypernetworkError(weights.pickle_refusal(path))
        return build(*_pickled(path))
    tensors, metadata = weights.read_all(path)
    layers: dict[int, tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]] = {}
    for key, tensor in tensors.items():
        width, side, name = _split(key)
        layers.setdefault(width, ({}, {}))[side][name] = tensor
    return build(layers, {name: metadata[name] for name in OPTIONS if name in metadata})


def _split(key: str) -> tuple[int, int, str]:
    parts = key.split(".", 2)
    if len(parts) < 3 or not parts[0].isdigit() or parts[1] not in ("0", "1"):
        raise HypernetworkError(f"tensor '{key}' is not <width>.<0|1>.<layer>: not a hypernetwork")
    return int(parts[0]), int(parts[1]), parts[2]


def _pickled(path: Path) -> tuple[dict, dict[str, Any]]:
    state = weights.unpickled(path)
    layers = {}
    for key, value in state.items():
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            if not (isinstance(value, (list, tuple)) and len(value) == 2):
                raise HypernetworkError(f"width {key} holds no (key, value) pair of layers")
            layers[int(key)] = (dict(value[0]), dict(value[1]))
    return layers, {name: state[name] for name in OPTIONS if name in state}


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("true", "1")


def _order(name: str) -> list[Any]:
    """Natural order of layer names ("linear.10" after "linear.2"): safetensors sorts its keys."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def build(layers: dict[int, tuple[dict, dict]], options: dict[str, Any]) -> Networks:
    """The MLP pair of each width from its two state dicts and the file's options."""
    if not layers:
        raise HypernetworkError("it holds no layers (no width keys): not a hypernetwork")
    activation = str(options.get("activation_func", "linear"))
    if activation not in ACTIVATIONS:
        raise HypernetworkError(
            f"activation_func '{activation}' is not supported (supported: {', '.join(ACTIVATIONS)})"
        )
    settings = (
        activation,
        _flag(options.get("is_layer_norm", False)),
        _flag(options.get("activate_output", False)),
    )
    return {width: (_mlp(key, *settings), _mlp(value, *settings)) for width, (key, value) in layers.items()}


def _mlp(state: dict, activation: str, layer_norm: bool, activate_output: bool) -> torch.nn.Module:
    names = sorted((k[: -len(".weight")] for k in state if k.endswith(".weight")), key=_order)
    modules: list[torch.nn.Module] = []
    index = 0
    while index < len(names):
        weight, bias = state[f"{names[index]}.weight"], state.get(f"{names[index]}.bias")
        if weight.dim() != 2:
            raise HypernetworkError(f"layer '{names[index]}' is not a linear layer ({tuple(weight.shape)})")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.load_state_dict({"weight": weight, **({"bias": bias} if bias is not None else {})})
        modules.append(linear)
        last = index == len(names) - (2 if layer_norm else 1)
        if activation != "linear" and (not last or activate_output):
            modules.append(ACTIVATIONS[activation]())
        if layer_norm:
            index += 1
            norm_weight, norm_bias = state[f"{names[index]}.weight"], state[f"{names[index]}.bias"]
            norm = torch.nn.LayerNorm(norm_weight.shape[0])
            norm.load_state_dict({"weight": norm_weight, "bias": norm_bias})
            modules.append(norm)
        index += 1
    return torch.nn.Sequential(*modules).eval().requires_grad_(False)


class ShiftedInput(torch.nn.Module):
    """A projection whose input is first shifted by a hypernetwork MLP: ``linear(x + mlp(x) * s)``."""

    def __init__(self, linear: torch.nn.Module, mlp: torch.nn.Module, strength: float) -> None:
        super().__init__()
        self.linear, self.mlp, self.strength = linear, mlp, strength

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.linear(x + self.mlp(x) * self.strength, *args, **kwargs)


def patched_unet(unet: torch.nn.Module, networks: Networks, strength: float) -> tuple[torch.nn.Module, int]:
    """A copy-on-write copy of ``unet`` whose attention layers' key and value projections read their
    input shifted by the MLPs of its width, and how many layers were patched (``unet`` is untouched)."""
    root = shallow(unet)
    fresh = {id(root)}
    placed: dict[tuple[int, int, torch.device, torch.dtype], torch.nn.Module] = {}
    patched = 0
    for name, module in list(unet.named_modules()):
        to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
        if not isinstance(to_k, torch.nn.Linear) or not isinstance(to_v, torch.nn.Linear):
            continue
        pair = networks.get(to_k.in_features)
        if pair is None:
            continue
        attention = owned(root, fresh, name)
        for side, (slot, linear) in enumerate((("to_k", to_k), ("to_v", to_v))):
            where = (to_k.in_features, side, linear.weight.device, linear.weight.dtype)
            if where not in placed:  # one copy per width, side and placement, shared by its layers
                placed[where] = copy.deepcopy(pair[side]).to(device=where[2], dtype=where[3])
            attention._modules[slot] = ShiftedInput(linear, placed[where], strength)
        patched += 1
    return root, patched
