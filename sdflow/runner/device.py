"""Choosing the device and dtype: auto = cuda, then mps, then cpu; fp16 on cuda, fp32 elsewhere."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
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
    """fp16 on CUDA and fp32 elsewhere, unless ``name`` (fp32, fp16, bf16) says otherwise."""
    if name is not None:
        if name not in DTYPES:
            raise ValueError(f"unknown dtype '{name}' (expected one of {', '.join(DTYPES)})")
        return DTYPES[name]
    return torch.float16 if device.type == "cuda" else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)
