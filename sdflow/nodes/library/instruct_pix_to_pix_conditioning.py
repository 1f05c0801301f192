"""InstructPixToPixConditioning: the image to edit, encoded, carried by both conditionings for an
InstructPix2Pix UNet (which reads it next to the latent), and the empty latent to sample."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.vae_encode import VAEEncode
from sdflow.nodes.types import Conditioning, Image, Latent, Vae


class InstructPixToPixConditioning(Node):
    """Attach the image to edit to both conditionings, for an InstructPix2Pix model (ComfyUI's node).

    The VAE latent of ``pixels`` (its mode, unscaled, as InstructPix2Pix was trained) rides on
    positive and negative, so plain CFG sees the image on both sides; ``latent`` is an empty latent
    of the image's size for AddNoise (txt2img-style)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {
        "positive": Conditioning,
        "negative": Conditioning,
        "latent": Latent,
    }
    same_family: ClassVar[tuple[str, ...]] = ("positive", "negative")
    family_from: ClassVar[dict[str, str]] = {"positive": "positive", "negative": "negative"}

    positive: Conditioning = Field(description="the edit instruction")
    negative: Conditioning = Field(description="what to steer away from")
    vae: Vae = Field(description="the VAE, from LoadCheckpoint")
    pixels: Image = Field(description="the image to edit; cropped to multiples of 8 about its centre")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        pixels = self._cropped(ctx)
        encoder = VAEEncode.model_construct(vae=self.vae, image=Image(pixels), posterior="mode")
        scaled = encoder.run(ctx)["latent"].samples
        image_latent = scaled / self.vae.vae.config.scaling_factor
        return {
            "positive": replace(self.positive, concat=image_latent),
            "negative": replace(self.negative, concat=image_latent),
            "latent": Latent(torch.zeros_like(image_latent), is_empty=True),
        }

    def _cropped(self, ctx: RunContext) -> torch.Tensor:
        """The pixels cut to multiples of the VAE's factor about the centre, as ComfyUI crops them."""
        factor = self.vae.scale_factor
        pixels = self.pixels.pixels
        height, width = pixels.shape[-2:]
        kept_h, kept_w = height - height % factor, width - width % factor
        if 0 in (kept_h, kept_w):
            raise ctx.error(f"the image is {width}x{height}: both sides must be at least {factor}", "pixels")
        top, left = (height % factor) // 2, (width % factor) // 2
        return pixels[..., top : top + kept_h, left : left + kept_w]
