"""TomePatchModel: token merging in the UNet's highest-resolution self-attention (ToMe for SD)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models.patch import hookable_copy, owned
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.flow_models import unet_only
from sdflow.nodes.ops.token_merge import match
from sdflow.nodes.types import Model


class _LatentSize:
    """The (height, width) of the latent the UNet is running on, set by a pre-hook on each call."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        self.size = (int(sample.shape[-2]), int(sample.shape[-1]))


class TomeProcessor:
    """Wraps a self-attention processor: merge the tokens, attend, unmerge (only where the layer
    sees the latent at full resolution)."""

    def __init__(self, inner: Any, latent: _LatentSize, ratio: float) -> None:
        self.inner, self.latent, self.ratio = inner, latent, ratio

    def __call__(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        size = self.latent.size
        if hidden_states.dim() != 3 or size is None or hidden_states.shape[1] != size[0] * size[1]:
            return self.inner(attn, hidden_states, *args, **kwargs)
        merge, unmerge = match(hidden_states, size[0], size[1], self.ratio)
        return unmerge(self.inner(attn, merge(hidden_states), *args, **kwargs))


def tome_unet(unet: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """A copy-on-write copy of ``unet`` whose self-attention layers (attn1) merge tokens."""
    root = hookable_copy(unet)
    latent = _LatentSize()
    root.register_forward_pre_hook(latent, with_kwargs=True)
    fresh = {id(root)}
    for name, module in list(unet.named_modules()):
        if name.endswith(".attn1"):
            owned(root, fresh, name).processor = TomeProcessor(module.processor, latent, ratio)
    return root


class TomePatchModel(Node):
    """Merge similar tokens in the UNet's full-resolution self-attention (ToMe for SD): faster at
    large sizes, the picture slightly changed; ratio 0 draws exactly the unpatched picture."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="the model to patch; left unchanged")
    ratio: float = Field(0.3, ge=0.0, le=0.9, description="share of the full-resolution tokens merged away")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        unet_only(self, self.model, ctx)
        if self.ratio == 0:
            return {"model": self.model}
        return {"model": replace(self.model, unet=tome_unet(self.model.unet, self.ratio))}
