"""Canny: the edge map of a picture (OpenCV), a control picture for ControlNets."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image


def canny_edges(pixels: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """(batch, 3, h, w) white-on-black edges of cv2.Canny run on each item's uint8 RGB picture."""
    import cv2  # opencv-python-headless: imported here so the other nodes load without it

    pictures = (pixels.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    edges = []
    for picture in pictures.permute(0, 2, 3, 1).numpy():
        found = cv2.Canny(np.ascontiguousarray(picture[..., :3]), low, high)
        edges.append(torch.from_numpy(found).float().div(255.0))
    stacked = torch.stack(edges).unsqueeze(1).repeat(1, 3, 1, 1)
    return stacked.to(pixels.device, pixels.dtype)


class Canny(Node):
    """Canny edge map of an image (OpenCV), white edges on black, as a ControlNet's control picture."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    image: Image = Field(description="the picture to find edges in")
    low: int = Field(100, ge=0, le=255, description="lower hysteresis threshold (0-255 grey levels)")
    high: int = Field(200, ge=0, le=255, description="upper hysteresis threshold, at least low")

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        low, high = constants.get("low", 100), constants.get("high", 200)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            return [("low", f"low ({low}) must not exceed high ({high})")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.low > self.high:
            raise ctx.error(f"low ({self.low}) must not exceed high ({self.high})", "low")
        return {"image": Image(canny_edges(self.image.pixels, self.low, self.high))}
