"""Latent sources: EmptyLatent."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import LATENT_CHANNELS, VAE_SCALE, Latent


class EmptyLatent(Node):
    """An all-zero latent of the given image size: the start of txt2img."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    width: int = Field(512, ge=8, le=8192, multiple_of=8, description="image width in pixels")
    height: int = Field(512, ge=8, le=8192, multiple_of=8, description="image height in pixels")
    batch_size: int = Field(1, ge=1, le=64, description="images per run")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        shape = (
            self.batch_size,
            LATENT_CHANNELS,
            self.height // VAE_SCALE,
            self.width // VAE_SCALE,
        )
        samples = torch.zeros(shape, device=ctx.device, dtype=ctx.dtype)
        return {"latent": Latent(samples, is_empty=True)}
