"""Image preprocessors for control pictures: Canny edges, inversion, image <-> mask conversion."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image, Mask

CHANNELS = {"red": 0, "green": 1, "blue": 2, "alpha": 3}


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
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        low, high = constants.get("low", 100), constants.get("high", 200)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            return [("low", f"low ({low}) must not exceed high ({high})")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.low > self.high:
            raise ctx.error(f"low ({self.low}) must not exceed high ({self.high})", "low")
        return {"image": Image(canny_edges(self.image.pixels, self.low, self.high))}


class ImageInvert(Node):
    """The image's negative: 1 - pixels."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    image: Image = Field(description="the picture to invert")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"image": Image(1.0 - self.image.pixels)}


class ImageToMask(Node):
    """One channel of an image as a mask (bright = 1 = repaint)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"mask": Mask}

    image: Image = Field(description="the picture to read the channel from")
    channel: Literal["red", "green", "blue", "alpha"] = Field(
        "red", description="which channel becomes the mask"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        index = CHANNELS[self.channel]
        pixels = self.image.pixels
        if index >= pixels.shape[1]:
            raise ctx.error(f"the image has {pixels.shape[1]} channels: no {self.channel} channel", "channel")
        return {"mask": Mask(pixels[:, index : index + 1].clone())}


class MaskToImage(Node):
    """A mask as a grey RGB image (the mask in all three channels)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    mask: Mask = Field(description="the mask to show as a picture")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"image": Image(self.mask.values.repeat(1, 3, 1, 1))}
