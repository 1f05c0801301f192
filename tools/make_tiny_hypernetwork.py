"""Tiny random hypernetworks for the built-in tiny-sd15, for tests: A1111's
pickled layout (``.pt``) and sdflow's flattened ``.safetensors`` one.

    python tools/make_tiny_hypernetwork.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

WIDTHS = (32, 64, 128)  # tiny-sd15 attention inputs: 32 (most), 64 (mid-block self-attention); 128 none
SEED = 2400


def a1111_state(activation: str = "relu", layer_norm: bool = False, seed: int = SEED) -> dict[Any, Any]:
    """A hypernetwork as A1111 saves it: layer structure 1, 2, 1 per width, ``linear.N`` entries."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.3

    def side(width: int) -> dict[str, torch.Tensor]:
        layers, index = {}, 0
        for fan_in, fan_out in ((width, 2 * width), (2 * width, width)):
            layers[f"linear.{index}.weight"] = randn(fan_out, fan_in)
            layers[f"linear.{index}.bias"] = randn(fan_out)
            index += 1
            if activation != "linear" and fan_out != width:
                index += 1  # the activation module takes an index
            if layer_norm:
                layers[f"linear.{index}.weight"] = 1 + randn(fan_out)
                layers[f"linear.{index}.bias"] = randn(fan_out)
                index += 1
        return layers

    state: dict[Any, Any] = {width: [side(width), side(width)] for width in WIDTHS}
    state.update(
        activation_func=activation,
        is_layer_norm=layer_norm,
        layer_structure=[1, 2, 1],
        activate_output=False,
        name="tiny",
        step=0,
    )
    return state


def flattened(state: dict[Any, Any]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """sdflow's .safetensors layout of an A1111 state: tensors ``<width>.<0|1>.<name>``, options as
    metadata."""
    tensors = {
        f"{width}.{side}.{name}": tensor.contiguous()
        for width, pair in state.items()
        if isinstance(width, int)
        for side, layers in enumerate(pair)
        for name, tensor in layers.items()
    }
    options = ("activation_func", "is_layer_norm", "activate_output")
    return tensors, {name: str(state[name]).lower() for name in options}


def write(out: Path, activation: str = "relu", layer_norm: bool = False) -> tuple[Path, Path]:
    """(the .pt file, the .safetensors file) of one tiny hypernetwork, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = a1111_state(activation, layer_norm)
    stem = f"tiny_{activation}{'_norm' if layer_norm else ''}"
    torch.save(state, out / f"{stem}.pt")
    tensors, metadata = flattened(state)
    save_file(tensors, str(out / f"{stem}.safetensors"), metadata=metadata)
    return out / f"{stem}.pt", out / f"{stem}.safetensors"


if __name__ == "__main__":
    write(Path(sys.argv[1]))
