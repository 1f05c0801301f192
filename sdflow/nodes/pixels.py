"""Conversions between our Image/Mask tensors and PIL pictures."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image as PILImage

from sdflow.nodes.types import Image


def to_pil(image: Image) -> list[PILImage.Image]:
    """One 8-bit RGB PIL picture per batch item, rounded as diffusers' numpy_to_pil rounds."""
    array = image.pixels.permute(0, 2, 3, 1).float().cpu().numpy()
    array = (array * 255).round().astype(np.uint8)
    return [PILImage.fromarray(item) for item in array]


def from_pil(picture: PILImage.Image) -> torch.Tensor:
    """A (1, 3, h, w) float32 tensor in [0, 1] from an RGB PIL picture."""
    array = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()
