"""Where a model computes: its device and dtype, read cheaply and right under model offload."""

from __future__ import annotations

import torch


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device a module runs on and its weights' dtype. Read from one parameter (diffusers'
    ``.device``/``.dtype`` walk every submodule, about a millisecond each on the CPU); an offloaded
    model (its weights on the CPU between uses) names its execution device, an fp8 or GGUF one the
    dtype it computes in."""
    weights = next(module.parameters())
    # a model kept in 8 bits or quantized (cast per layer while it computes) names its compute dtype
    dtype = getattr(module, "sdflow_compute_dtype", weights.dtype)
    return getattr(module, "sdflow_execution_device", weights.device), dtype
