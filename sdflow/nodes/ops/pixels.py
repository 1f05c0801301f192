"""Conversions between our Image/Mask tensors and PIL pictures, and resizing them."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from PIL import Image as PILImage

from sdflow.nodes.types import Image

Resample = Literal["nearest", "bilinear", "bicubic", "lanczos", "box"]

PIL_FILTERS: dict[str, PILImage.Resampling] = {
    "nearest": PILImage.Resampling.NEAREST,
    "bilinear": PILImage.Resampling.BILINEAR,
    "bicubic": PILImage.Resampling.BICUBIC,
    "lanczos": PILImage.Resampling.LANCZOS,
    "box": PILImage.Resampling.BOX,
}


def to_pil(image: Image) -> list[PILImage.Image]:
    """One 8-bit RGB PIL picture per batch item, rounded as diffusers' numpy_to_pil rounds."""
    array = image.pixels.permute(0, 2, 3, 1).float().cpu().numpy()
    array = (array * 255).round().astype(np.uint8)
    return [PILImage.fromarray(item) for item in array]


def from_pil(picture: PILImage.Image) -> torch.Tensor:
    """A (1, 3, h, w) float32 tensor in [0, 1] from an RGB PIL picture."""
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def plane_from_pil(picture: PILImage.Image) -> torch.Tensor:
    """A (1, 1, h, w) float32 tensor in [0, 1] from a one-channel 8-bit PIL picture (mode 'L')."""
    array = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0).unsqueeze(0).contiguous()


def resize_8bit(tensor: torch.Tensor, size: tuple[int, int], resample: Resample) -> torch.Tensor:
    """(batch, 1 or 3, h, w) in [0, 1] resized to ``size`` (width, height) as diffusers resizes PIL
    pictures: on 8-bit pixels with PIL, so an 8-bit input gives diffusers' result bit for bit."""
    grey = tensor.shape[1] == 1
    array = (tensor.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
    items = []
    for item in array:
        picture = PILImage.fromarray(item[..., 0] if grey else item)  # mode 'L' or 'RGB'
        resized = np.asarray(picture.resize(size, resample=PIL_FILTERS[resample]), dtype=np.float32)
        items.append(torch.from_numpy(resized / 255.0).reshape(size[1], size[0], -1))
    return torch.stack(items).permute(0, 3, 1, 2).contiguous()


def resize_float(tensor: torch.Tensor, size: tuple[int, int], resample: Resample) -> torch.Tensor:
    """(batch, channels, h, w) resized to ``size`` (width, height) with PIL's filters on float
    planes: no 8-bit rounding. Results are clamped to [0, 1] (lanczos and bicubic overshoot)."""
    planes = tensor.float().cpu().numpy()
    out = np.empty((*planes.shape[:2], size[1], size[0]), dtype=np.float32)
    for b, channels in enumerate(planes):
        for c, plane in enumerate(channels):
            picture = PILImage.fromarray(np.ascontiguousarray(plane))  # mode 'F'
            out[b, c] = np.asarray(picture.resize(size, resample=PIL_FILTERS[resample]))
    return torch.from_numpy(out).clamp(0.0, 1.0)


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
