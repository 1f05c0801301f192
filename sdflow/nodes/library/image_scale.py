"""ImageScale and LatentUpscale: change the size of an image or a latent (hires-fix workflows)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.latent import VAE_SCALE
from sdflow.nodes.pixels import Resample, resize_float
from sdflow.nodes.types import Image, Latent

LatentMode = Literal["nearest", "bilinear", "bicubic", "area"]


def target_size(size: tuple[int, int], width: int, height: int, factor: float) -> tuple[int, int]:
    """(width, height) to resize ``size`` to: both given, one given (the other keeps the aspect
    ratio), or neither (``factor`` times the size); at least 1 pixel each."""
    old_w, old_h = size
    if width and height:
        return width, height
    if width:
        return width, max(1, round(old_h * width / old_w))
    if height:
        return max(1, round(old_w * height / old_h)), height
    return max(1, round(old_w * factor)), max(1, round(old_h * factor))


class ImageScale(Node):
    """Resize an image to a width and height, or by a factor."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    image: Image = Field(description="the image to resize")
    width: int = Field(0, ge=0, le=16384, description="new width in pixels; 0 = from height or factor")
    height: int = Field(0, ge=0, le=16384, description="new height in pixels; 0 = from width or factor")
    factor: float = Field(
        1.0, gt=0.0, le=16.0, description="scale factor, used when width and height are both 0"
    )
    resample: Resample = Field(
        "lanczos", description="filter: nearest, bilinear, bicubic, lanczos or box (area average)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        size = target_size(self.image.size, self.width, self.height, self.factor)
        if size == self.image.size:
            return {"image": self.image}
        return {"image": Image(resize_float(self.image.pixels, size, self.resample))}


class LatentUpscale(Node):
    """Resize a latent (and its noise mask) by a factor or to a pixel size, e.g. for a hires fix."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    latent: Latent = Field(description="the latent to resize; its noise state is dropped (noise it again)")
    width: int = Field(
        0, ge=0, le=16384, multiple_of=VAE_SCALE, description="new image width; 0 = from height or factor"
    )
    height: int = Field(
        0, ge=0, le=16384, multiple_of=VAE_SCALE, description="new image height; 0 = from width or factor"
    )
    factor: float = Field(
        2.0, gt=0.0, le=8.0, description="scale factor, used when width and height are both 0"
    )
    mode: LatentMode = Field("bilinear", description="interpolation: nearest, bilinear, bicubic or area")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        samples = self.latent.samples
        old = (samples.shape[-1], samples.shape[-2])
        if self.width or self.height:
            pixels = target_size((old[0] * VAE_SCALE, old[1] * VAE_SCALE), self.width, self.height, 1.0)
            size = (max(1, pixels[0] // VAE_SCALE), max(1, pixels[1] // VAE_SCALE))
        else:
            size = target_size(old, 0, 0, self.factor)
        latent = self.latent.with_(samples=self._resized(samples, size), noise=None)
        if latent.noise_mask is not None:
            mask = F.interpolate(latent.noise_mask, size=(size[1], size[0]), mode="nearest")
            latent = latent.with_(noise_mask=mask)
        if latent.masked_image is not None:
            image = latent.masked_image
            latent = latent.with_(
                masked_image=replace(
                    image,
                    mean=self._resized(image.mean, size),
                    std=self._resized(image.std, size),
                    latents=None if image.latents is None else self._resized(image.latents, size),
                )
            )
        return {"latent": latent}

    def _resized(self, tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if (tensor.shape[-1], tensor.shape[-2]) == size:
            return tensor
        return F.interpolate(tensor, size=(size[1], size[0]), mode=self.mode)
