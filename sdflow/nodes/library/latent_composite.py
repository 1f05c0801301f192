"""LatentComposite and LatentCompositeMasked: paste one latent into another (ComfyUI's nodes)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import VAE_SCALE, Latent, Mask

MAX_OFFSET = 16384


def _batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """``tensor`` cut or repeated along the batch to ``size`` (ComfyUI's repeat_to_batch_size)."""
    if tensor.shape[0] >= size:
        return tensor[:size]
    repeats = -(-size // tensor.shape[0])
    return tensor.repeat(repeats, *[1] * (tensor.dim() - 1))[:size]


def edge_ramp(shape: tuple[int, ...], feather: int, sides: tuple[bool, bool, bool, bool]) -> torch.Tensor:
    """Ones of ``shape`` (…, h, w) that fall off linearly over ``feather`` cells at the sides asked
    for (top, bottom, left, right): the blend weight of a pasted latent."""
    weight = torch.ones(shape)
    top, bottom, left, right = sides
    for t in range(feather):
        step = (t + 1) / feather
        if top:
            weight[..., t, :] *= step
        if bottom:
            weight[..., shape[-2] - 1 - t, :] *= step
        if left:
            weight[..., :, t] *= step
        if right:
            weight[..., :, shape[-1] - 1 - t] *= step
    return weight


class LatentComposite(Node):
    """Paste ``samples_from`` into ``samples_to`` at pixel offset (x, y), its edges feathered."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    samples_to: Latent = Field(description="the latent pasted into (its noise mask is kept)")
    samples_from: Latent = Field(description="the latent to paste; what falls outside is cut off")
    x: int = Field(0, ge=0, le=MAX_OFFSET, multiple_of=VAE_SCALE, description="left edge, in pixels")
    y: int = Field(0, ge=0, le=MAX_OFFSET, multiple_of=VAE_SCALE, description="top edge, in pixels")
    feather: int = Field(
        0, ge=0, le=MAX_OFFSET, multiple_of=VAE_SCALE, description="blend width at inner edges, pixels"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        target = self.samples_to.samples
        x, y, feather = self.x // VAE_SCALE, self.y // VAE_SCALE, self.feather // VAE_SCALE
        source = self.samples_from.samples[
            ..., : max(0, target.shape[-2] - y), : max(0, target.shape[-1] - x)
        ]
        source = _batch(source.to(target), target.shape[0])
        h, w = source.shape[-2:]
        out = target.clone()
        region = out[..., y : y + h, x : x + w]
        if feather == 0:
            region.copy_(source)
        else:
            full = self.samples_from.samples.shape
            sides = (y != 0, y + full[-2] < target.shape[-2], x != 0, x + full[-1] < target.shape[-1])
            weight = edge_ramp(tuple(source.shape), feather, sides).to(target)
            region.copy_(source * weight + region * (1 - weight))
        return {"latent": self.samples_to.with_(samples=out, noise=None, cut=None, is_empty=False)}


class LatentCompositeMasked(Node):
    """Paste ``source`` into ``destination`` at pixel offset (x, y) through a mask (1 = source)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    destination: Latent = Field(description="the latent pasted into (its noise mask is kept)")
    source: Latent = Field(description="the latent to paste")
    x: int = Field(0, ge=0, le=MAX_OFFSET, multiple_of=VAE_SCALE, description="left edge, in pixels")
    y: int = Field(0, ge=0, le=MAX_OFFSET, multiple_of=VAE_SCALE, description="top edge, in pixels")
    resize_source: bool = Field(False, description="first resize the source to the destination's size")
    mask: Mask | None = Field(None, description="where the source shows (resized to it); none = everywhere")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        destination = self.destination.samples
        out = destination.clone()
        source = self.source.samples.to(destination)
        if self.resize_source:
            source = F.interpolate(source, size=tuple(destination.shape[-2:]), mode="bilinear")
        source = _batch(source, destination.shape[0])
        left, top = self.x // VAE_SCALE, self.y // VAE_SCALE
        if self.mask is None:
            weight = torch.ones_like(source)
        else:
            values = self.mask.values.to(destination).reshape(-1, 1, *self.mask.values.shape[-2:])
            weight = F.interpolate(values, size=tuple(source.shape[-2:]), mode="bilinear")
            weight = _batch(weight, source.shape[0])
        region = out[..., top : top + source.shape[-2], left : left + source.shape[-1]]
        weight = weight[..., : region.shape[-2], : region.shape[-1]]
        pasted = source[..., : region.shape[-2], : region.shape[-1]]
        region.copy_(weight * pasted + (1 - weight) * region)
        return {"latent": self.destination.with_(samples=out, noise=None, cut=None, is_empty=False)}
