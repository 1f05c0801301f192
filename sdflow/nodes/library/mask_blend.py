"""MaskBlend and LatentMaskBlend: combine two images or two latents through a mask."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.pixels import resize_float
from sdflow.nodes.types import Image, Latent, Mask

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the same shape
FEATHER_HELP = (
    "soften the mask's edge by a gaussian blur of this sigma, in pixels; the soft edge lies inside "
    "the mask, so pixels where the mask is 0 stay exactly the background"
)


def gaussian_blur(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """(batch, channels, h, w) blurred by a separable gaussian; edges extend the border pixels."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(values.dtype)
    channels = values.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    columns = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(values, (radius, radius, 0, 0), mode="replicate")
    values = F.conv2d(padded, rows, groups=channels)
    padded = F.pad(values, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, columns, groups=channels)


def feathered(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """The mask with an edge softened inward: 2 * blur - 1 puts a straight edge's ramp inside the
    mask, and taking the minimum with the mask keeps every 0 a 0."""
    if sigma <= 0:
        return mask
    ramp = (2.0 * gaussian_blur(mask, sigma) - 1.0).clamp(0.0, 1.0)
    return torch.minimum(mask, ramp)


def same_shape(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two (width, height) sizes have the same aspect ratio, within ASPECT_TOLERANCE."""
    return abs(a[0] / a[1] - b[0] / b[1]) <= ASPECT_TOLERANCE * b[0] / b[1]


def mask_at(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mask resized to ``size`` (width, height): area averages when shrinking (a latent cell
    gets the mean of its 8x8 pixels), bilinear when growing."""
    if (mask.shape[-1], mask.shape[-2]) == size:
        return mask
    shrinking = size[0] <= mask.shape[-1] and size[1] <= mask.shape[-2]
    mode = "area" if shrinking else "bilinear"
    return F.interpolate(mask.float(), size=(size[1], size[0]), mode=mode).clamp(0, 1)


def blend(background: torch.Tensor, foreground: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """background where the mask is 0, foreground where it is 1, linear in between."""
    mask = mask.to(background.device, background.dtype)
    return background * (1 - mask) + foreground.to(background.dtype) * mask


def _check_batches(ctx: RunContext, images: int, other: int, field: str, what: str) -> None:
    if other not in (1, images):
        raise ctx.error(f"{other} {what} for a batch of {images}: give one or one per item", field)


class MaskBlend(Node):
    """Blend two images through a mask, e.g. paste a generated image back over the original."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    background: Image = Field(description="kept where the mask is 0 (the original image, for a paste-back)")
    foreground: Image = Field(
        description="used where the mask is 1; resized (Lanczos) to the background's size if it has its shape"
    )
    mask: Mask = Field(description="1 = foreground, 0 = background; resized to the images if needed")
    feather: float = Field(0.0, ge=0.0, le=256.0, description=FEATHER_HELP)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        size = self.background.size
        batch = self.background.pixels.shape[0]
        _check_batches(ctx, batch, self.foreground.pixels.shape[0], "foreground", "foreground images")
        _check_batches(ctx, batch, self.mask.values.shape[0], "mask", "masks")
        for field, other in (("foreground", self.foreground.size), ("mask", self.mask.size)):
            if not same_shape(other, size):
                raise ctx.error(
                    f"{field} is {other[0]}x{other[1]} but the background is {size[0]}x{size[1]}: "
                    "they must have the same shape (aspect ratio) to be blended",
                    field,
                )
        foreground = self.foreground.pixels
        if self.foreground.size != size:
            foreground = resize_float(foreground, size, "lanczos")
        mask = feathered(mask_at(self.mask.values.float().cpu(), size), self.feather)
        return {"image": Image(blend(self.background.pixels, foreground, mask))}


class LatentMaskBlend(Node):
    """Blend two latents of the same size through a (pixel) mask, resized to the latent's size."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    background: Latent = Field(description="kept where the mask is 0")
    foreground: Latent = Field(description="used where the mask is 1; the result keeps its metadata")
    mask: Mask = Field(description="1 = foreground, 0 = background, at pixel (or any) size of the same shape")
    feather: float = Field(0.0, ge=0.0, le=256.0, description=FEATHER_HELP + " (blurred before shrinking)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        back, fore = self.background.samples, self.foreground.samples
        if back.shape != fore.shape:
            raise ctx.error(
                f"foreground latent is {tuple(fore.shape)} but the background is {tuple(back.shape)}",
                "foreground",
            )
        _check_batches(ctx, back.shape[0], self.mask.values.shape[0], "mask", "masks")
        size = (back.shape[-1], back.shape[-2])
        if not same_shape(self.mask.size, size):
            raise ctx.error(
                f"the mask is {self.mask.size[0]}x{self.mask.size[1]} but the latent is "
                f"{size[0]}x{size[1]} (x8 in pixels): they must have the same shape",
                "mask",
            )
        mask = mask_at(feathered(self.mask.values.float().cpu(), self.feather), size)
        latent = self.foreground.with_(samples=blend(back, fore, mask), noise=None)
        return {"latent": latent}
