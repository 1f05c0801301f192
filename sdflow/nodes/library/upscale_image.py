"""UpscaleImage: enlarge an image with an upscale model, in overlapping tiles blended without seams."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.tiling import run_tiled
from sdflow.nodes.types import Image
from sdflow.nodes.types_upscale import UpscaleModel


class UpscaleImage(Node):
    """Upscale an image with a model from LoadUpscaleModel (by the model's own factor, e.g. 4x)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    image: Image = Field(description="the image to upscale")
    upscale_model: UpscaleModel = Field(description="the model, from LoadUpscaleModel")
    tile_size: int = Field(
        512,
        ge=0,
        le=8192,
        description="tile side in input pixels (memory grows with it, not with the image); 0 = no tiles",
    )
    tile_overlap: int = Field(32, ge=0, le=1024, description="overlap of neighbouring tiles in input pixels")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        upscaler = self.upscale_model.upscaler
        if upscaler.input_channels != self.image.pixels.shape[1]:
            raise ctx.error(
                f"this {upscaler.architecture} model takes {upscaler.input_channels}-channel images, not RGB",
                "upscale_model",
            )
        if self.tile_size and self.tile_overlap * 2 >= self.tile_size:
            raise ctx.error(
                f"tile_overlap {self.tile_overlap} must be less than half of tile_size {self.tile_size}",
                "tile_overlap",
            )
        pixels = self.image.pixels
        with torch.inference_mode():
            out = [self._one(pixels[i : i + 1]) for i in range(pixels.shape[0])]
        return {"image": Image(torch.cat(out).to(pixels.device))}

    def _one(self, picture: torch.Tensor) -> torch.Tensor:
        """One (1, C, H, W) picture through the model, tile by tile (float32 on the model's device)."""
        upscaler = self.upscale_model.upscaler
        descriptor = upscaler.descriptor
        x = picture.to(device=descriptor.device, dtype=descriptor.dtype)

        def model(window: torch.Tensor) -> torch.Tensor:
            return descriptor(window).float()

        height, width = x.shape[-2:]
        if not self.tile_size or (height <= self.tile_size and width <= self.tile_size):
            return model(x)
        return run_tiled(
            model, x, self.tile_size, self.tile_overlap, upscaler.scale, margin=self.tile_overlap // 4
        ).clamp_(0, 1)
