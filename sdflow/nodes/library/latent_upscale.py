"""LatentUpscale: resize a latent (hires-fix workflows)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.latent_resize import resized_latent
from sdflow.nodes.ops.pixels import target_size
from sdflow.nodes.types import VAE_SCALE, Latent

LatentMode = Literal["nearest", "bilinear", "bicubic", "area"]


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
        return {"latent": resized_latent(self.latent, size, self._resized)}

    def _resized(self, tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(tensor, size=(size[1], size[0]), mode=self.mode)
