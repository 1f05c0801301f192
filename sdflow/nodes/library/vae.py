"""VAEDecode: latents back to pixels."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image, Latent, Vae


class VAEDecode(Node):
    """Decode a latent into an RGB image with the VAE."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    vae: Vae = Field(description="the VAE, from LoadCheckpoint")
    latent: Latent = Field(description="the latent to decode")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        vae = self.vae.vae
        weights = next(vae.parameters())  # vae.device/.dtype walk every submodule: slow per call
        latents = self.latent.samples.to(weights.device, weights.dtype) / vae.config.scaling_factor
        with torch.inference_mode():
            decoded = vae.decode(latents, return_dict=False)[0]
        pixels = (decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
        return {"image": Image(pixels)}
