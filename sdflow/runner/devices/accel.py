"""How loaded models are prepared for speed or memory: attention kind, memory layout, torch.compile
and model offload. Applied once to what a model-loading node returns, before it enters the model
cache; the settings are part of every cache key, so models prepared differently never mix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

from sdflow.nodes.types import Clip, Model, Vae

Attention = Literal["sdpa", "sliced"]
Offload = Literal["none", "model"]


@dataclass(frozen=True)
class Acceleration:
    """Runner-wide model settings.

    - ``attention``: 'sdpa' (torch's scaled_dot_product_attention, diffusers' default: fused and
      memory-efficient) or 'sliced' (the UNet's attention a few heads at a time: least memory; the
      VAE's one-head attention is bounded by tiled decoding instead).
    - ``channels_last``: NHWC weights and activations, faster convolutions on CUDA tensor cores;
      None = on for CUDA only (on the CPU it changes float rounding, not speed).
    - ``compile``: ``torch.compile`` the UNet (the first run pays the compilation).
    - ``offload``: 'model' keeps every model on the CPU and moves each to the device only while a
      node uses it (accelerate's CPU-offload hooks, chained so one model is resident at a time):
      for GPUs too small for the whole checkpoint. Nothing to do on a CPU-only run.
    """

    attention: Attention = "sdpa"
    channels_last: bool | None = None
    compile: bool = False
    offload: Offload = "none"

    def key(self, device: torch.device) -> str:
        """What of these settings changes results or placement on ``device``, for cache keys ('' for
        the defaults)."""
        parts = [] if self.attention == "sdpa" else [f"attention={self.attention}"]
        if self.uses_channels_last(device):
            parts.append("channels_last")
        if self.compile:
            parts.append("compile")
        if self.offloads(device):
            parts.append("offload=model")
        return ",".join(parts)

    def uses_channels_last(self, device: torch.device) -> bool:
        return self.channels_last if self.channels_last is not None else device.type == "cuda"

    def offloads(self, device: torch.device) -> bool:
        return self.offload == "model" and device.type != "cpu"

    def load_device(self, device: torch.device) -> torch.device:
        """Where model-loading nodes put their weights: the CPU when offloading."""
        return torch.device("cpu") if self.offloads(device) else device

    def apply(self, outputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """The outputs of a model-loading node with these settings applied (modules changed in place,
        before anything else holds them)."""
        group = ModelOffload(device) if self.offloads(device) else None
        for value in outputs.values():
            for module in _modules(value):
                self._apply(value, module, device, group)
        return outputs

    def _apply(self, value: Any, module: torch.nn.Module, device: torch.device, group: Any) -> None:
        """One module of a loaded value (a diffusion transformer has no sliced attention)."""
        sliced = isinstance(value, Model) and self.attention == "sliced" and not value.image_prompts
        if sliced and hasattr(module, "set_attention_slice"):
            module.set_attention_slice("auto")  # (an IP-Adapter's processors are kept: its base is sliced)
        if isinstance(value, Model | Vae) and self.uses_channels_last(device):
            module.to(memory_format=torch.channels_last)
        if isinstance(value, Model) and self.compile:
            module.compile()  # in place: the same object, config and placement stay readable
        if group is not None:
            group.add(module)


def _modules(value: Any) -> list[torch.nn.Module]:
    """The modules of a loaded value: every text encoder of a Clip (SDXL's two, SD3's three)."""
    if isinstance(value, Clip):
        return [encoder for _, encoder in value.pairs]
    if isinstance(value, Model):
        return [value.unet]
    if isinstance(value, Vae):
        return [value.vae]
    return []


class ModelOffload:
    """Models that share one device in turn: before a model's forward, the one resident before it
    goes back to the CPU, it comes to the device, and its tensor arguments follow it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.resident: torch.nn.Module | None = None

    def add(self, module: torch.nn.Module) -> None:
        module.to("cpu")
        module.sdflow_execution_device = self.device  # read by sdflow.nodes.ops.placement
        module.register_forward_pre_hook(self._before_forward, with_kwargs=True)

    def _before_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if self.resident is not module:
            if self.resident is not None:
                self.resident.to("cpu")
            module.to(self.device)
            self.resident = module
        moved_kwargs = {name: _moved(value, self.device) for name, value in kwargs.items()}
        return tuple(_moved(value, self.device) for value in args), moved_kwargs


def _moved(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value
