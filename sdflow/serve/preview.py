"""Preview pictures of a denoising loop's latent, a small JPEG as base64 for the ``preview`` event.

The step event says which model is denoised (its family and checkpoint folder). A tiny autoencoder
for it (``sdflow.models.taesd.find``: a built-in distilled from that checkpoint's VAE, else the
user's ``vae_approx`` files for the family) decodes the latent; without one, the family's linear
latent-to-RGB approximation (``Family.latent_rgb``) colours it, no model run."""

from __future__ import annotations

import base64
import io
import logging
import threading
from pathlib import Path
from typing import Any

import torch
from PIL import Image as PILImage

from sdflow.models.families import SD15, Family

MAX_SIDE = 256
log = logging.getLogger("sdflow.serve")


def latent_to_rgb(latent: torch.Tensor, family: Family = SD15) -> torch.Tensor:
    """(3, h, w) in [0, 1] from the first item of a (b, c, h, w) latent by the family's factors
    (channels beyond the factors are ignored, missing ones count as 0)."""
    sample = latent[0].detach().float().cpu()
    factors = torch.tensor(family.latent_rgb, dtype=torch.float32)
    channels = min(sample.shape[0], factors.shape[0])
    rgb = torch.einsum("chw,cr->rhw", sample[:channels], factors[:channels])
    rgb = rgb + torch.tensor(family.latent_rgb_bias).view(3, 1, 1)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


def jpeg(rgb: torch.Tensor, scale: int) -> dict[str, str]:
    """{mime, image (base64 JPEG)} of a (3, h, w) picture in [0, 1] enlarged ``scale`` times, then
    brought to at most MAX_SIDE pixels a side."""
    array = (rgb.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = PILImage.fromarray(array)
    down = max(1, scale * max(picture.size) // MAX_SIDE)
    size = (picture.width * scale // down, picture.height * scale // down)
    if size != picture.size:
        picture = picture.resize(size, PILImage.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=80)
    return {"mime": "image/jpeg", "image": base64.b64encode(buffer.getvalue()).decode("ascii")}


class Previewer:
    """The server's previews (``__call__(StepProgress)``): by the step's model, with its tiny
    autoencoder when one is found (loaded once per model and device), else by its family's factors."""

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        self._lock = threading.Lock()
        self._tiny: dict[tuple[str, str | None, str], torch.nn.Module | None] = {}

    def __call__(self, event: Any) -> dict[str, str] | None:
        latent, family = event.latent, event.family or SD15
        if latent.ndim != 4 or latent.shape[0] == 0:
            return None
        tiny = self.tiny_vae(family, event.source, latent.device)
        if tiny is None or latent.shape[1] != tiny.config.latent_channels:
            return jpeg(latent_to_rgb(latent, family), 8)
        from sdflow.models import taesd

        pixels = taesd.decode_preview(tiny, latent[:1])[0].cpu()
        return jpeg(pixels, 1)

    def tiny_vae(self, family: Family, source: str | None, device: torch.device) -> torch.nn.Module | None:
        """The tiny autoencoder previewing ``family``'s latents from the checkpoint ``source``, or None."""
        key = (family.name, source, str(device))
        with self._lock:
            if key not in self._tiny:
                self._tiny[key] = self._load(family, source, device)
            return self._tiny[key]

    def _load(self, family: Family, source: str | None, device: torch.device) -> torch.nn.Module | None:
        from sdflow.models import taesd, vae

        path = taesd.find(family, Path(source) if source else None, self.allow_pickle)
        if path is None:
            return None
        try:
            return vae.load(path, device, torch.float32, self.allow_pickle)
        except (ValueError, OSError) as exc:  # a broken file: previews go on with the factors
            log.warning("previews: cannot load the tiny autoencoder %s (%s); using latent factors", path, exc)
            return None
