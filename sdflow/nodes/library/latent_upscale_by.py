"""LatentUpscaleBy: resize a latent by a factor, with ComfyUI's methods (bislerp included)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.bislerp import bislerp
from sdflow.nodes.ops.latent_resize import resized_latent
from sdflow.nodes.types import Latent

Method = Literal["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]


class LatentUpscaleBy(Node):
    """Resize a latent by ``scale_by`` (each side rounded), e.g. for a hires fix: ComfyUI's node."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    latent: Latent = Field(description="the latent to resize; its noise state is dropped (noise it again)")
    upscale_method: Method = Field(
        "nearest-exact",
        description="nearest-exact, bilinear, area, bicubic, or bislerp (spherical, keeps latent statistics)",
    )
    scale_by: float = Field(1.5, ge=0.01, le=8.0, description="factor for both sides")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        samples = self.latent.samples
        size = (
            max(1, round(samples.shape[-1] * self.scale_by)),
            max(1, round(samples.shape[-2] * self.scale_by)),
        )
        return {"latent": resized_latent(self.latent, size, self._resized)}

    def _resized(self, tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.upscale_method == "bislerp":
            return bislerp(tensor, *size)
        return F.interpolate(tensor, size=(size[1], size[0]), mode=self.upscale_method)
