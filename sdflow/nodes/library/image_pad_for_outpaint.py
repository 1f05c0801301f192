"""ImagePadForOutpaint: grow a picture with grey borders and a mask of them, for outpainting."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image, Mask

MAX_PAD = 8192
GREY = 0.5


def inner_feather(
    height: int, width: int, feathering: int, sides: tuple[bool, bool, bool, bool]
) -> torch.Tensor:
    """(height, width) weights that rise quadratically from 0, ``feathering`` pixels inside the
    original picture, to 1 at the padded sides (top, bottom, left, right); 0 elsewhere."""
    top, bottom, left, right = sides
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    far = torch.full((height, width), float(max(height, width)))
    distance = torch.minimum(
        torch.minimum(rows if top else far, (height - rows) if bottom else far),
        torch.minimum(cols if left else far, (width - cols) if right else far),
    )
    ramp = ((feathering - distance) / feathering).clamp(min=0.0)
    return torch.where(distance < feathering, ramp * ramp, torch.zeros(()))


class ImagePadForOutpaint(Node):
    """Pad a picture with mid-grey on the sides asked for; the mask is 1 there and fades into the
    picture over ``feathering`` pixels (ComfyUI's node)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image, "mask": Mask}

    image: Image = Field(description="the picture to extend")
    left: int = Field(0, ge=0, le=MAX_PAD, description="pixels to add on the left")
    top: int = Field(0, ge=0, le=MAX_PAD, description="pixels to add at the top")
    right: int = Field(0, ge=0, le=MAX_PAD, description="pixels to add on the right")
    bottom: int = Field(0, ge=0, le=MAX_PAD, description="pixels to add at the bottom")
    feathering: int = Field(
        40, ge=0, le=MAX_PAD, description="pixels over which the mask fades into the picture"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        pixels = self.image.pixels
        batch, channels, height, width = pixels.shape
        size = (height + self.top + self.bottom, width + self.left + self.right)
        padded = torch.full((batch, channels, *size), GREY, dtype=pixels.dtype, device=pixels.device)
        padded[..., self.top : self.top + height, self.left : self.left + width] = pixels
        mask = torch.ones(size, dtype=torch.float32)
        inner = torch.zeros((height, width))
        if self.feathering > 0 and 2 * self.feathering < min(height, width):
            sides = (self.top != 0, self.bottom != 0, self.left != 0, self.right != 0)
            inner = inner_feather(height, width, self.feathering, sides)
        mask[self.top : self.top + height, self.left : self.left + width] = inner
        mask = mask.to(pixels.device)[None, None].expand(batch, 1, *size).contiguous()
        return {"image": Image(padded), "mask": Mask(mask)}
