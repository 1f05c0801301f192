"""Preview pictures of a denoising loop's latent: the family's linear latent-to-RGB approximation
(``Family.latent_rgb``), a small JPEG as base64 for the ``preview`` event. No model runs."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image as PILImage

from sdflow.models.families import SD15, Family

MAX_SIDE = 256


def latent_to_rgb(latent: torch.Tensor, family: Family = SD15) -> torch.Tensor:
    """(3, h, w) in [0, 1] from the first item of a (b, c, h, w) latent; None-safe for odd channels
    (channels beyond the factors are ignored, missing ones count as 0)."""
    sample = latent[0].detach().float().cpu()
    factors = torch.tensor(family.latent_rgb, dtype=torch.float32)
    channels = min(sample.shape[0], factors.shape[0])
    rgb = torch.einsum("chw,cr->rhw", sample[:channels], factors[:channels])
    rgb = rgb + torch.tensor(family.latent_rgb_bias).view(3, 1, 1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def preview_picture(latent: torch.Tensor, family: Family = SD15) -> dict[str, str] | None:
    """{mime, image (base64 JPEG)} of the latent, at most MAX_SIDE pixels a side; None if it is not
    an image latent."""
    if latent.ndim != 4 or latent.shape[0] == 0:
        return None
    rgb = latent_to_rgb(latent, family)
    array = (rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = PILImage.fromarray(array)
    scale = max(1, 8 * max(picture.size) // MAX_SIDE)
    picture = picture.resize((picture.width * 8 // scale, picture.height * 8 // scale), PILImage.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return {"mime": "image/jpeg", "image": base64.b64encode(buffer.getvalue()).decode("ascii")}
