"""Resizing a latent with everything it carries: samples, noise mask and masked-image posterior."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from sdflow.nodes.types import Latent

Resize = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]  # (tensor, (width, height)) -> tensor


def resized_latent(latent: Latent, size: tuple[int, int], resize: Resize) -> Latent:
    """``latent`` at ``size`` (width, height in cells): samples and the masked image by ``resize``, the
    noise mask by nearest neighbour; its noise state is dropped (noise it again)."""

    def fit(tensor: torch.Tensor) -> torch.Tensor:
        return tensor if (tensor.shape[-1], tensor.shape[-2]) == size else resize(tensor, size)

    out = latent.with_(samples=fit(latent.samples), noise=None)
    if out.noise_mask is not None:
        out = out.with_(noise_mask=F.interpolate(out.noise_mask, size=(size[1], size[0]), mode="nearest"))
    if out.masked_image is not None:
        image = out.masked_image
        latents = None if image.latents is None else fit(image.latents)
        out = out.with_(
            masked_image=replace(image, mean=fit(image.mean), std=fit(image.std), latents=latents)
        )
    return out
