"""ImageInvert, ImageToMask and MaskToImage: the picture and mask conversions around control pictures."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image, Mask

CHANNELS = {"red": 0, "green": 1, "blue": 2, "alpha": 3}


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
