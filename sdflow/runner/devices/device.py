"""Choosing the device: auto = cuda, then mps, then cpu (the dtype: sdflow.runner.devices.dtypes)."""

from __future__ import annotations

import torch

from sdflow.runner.devices.dtypes import DTYPES, choose_dtype, dtype_name

__all__ = ["DEVICES", "DTYPES", "dtype_name", "pick_device", "pick_dtype"]
DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    """The device for ``name``; 'auto' takes the best one present. ValueError if it is absent."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(f"unknown device '{name}' (expected one of {', '.join(DEVICES)})")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but no CUDA GPU is available")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but MPS is not available")
    return torch.device(name)


def pick_dtype(device: torch.device, name: str | None = None) -> torch.dtype:
    """The dtype for ``name`` (auto, fp32, fp16, bf16; None = auto) on ``device``: see choose_dtype."""
    return choose_dtype(device, name).dtype
