"""VAEEncode: pixels to latents, for img2img and (with a mask) inpainting."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.ops.pixels import resize_8bit
from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.tiling import Tiling, run_tiled, wants_tiles
from sdflow.nodes.types import Image, Latent, Mask, MaskedImage, Vae

ASPECT_TOLERANCE = 0.01  # relative difference of width/height ratios still taken as the same shape


class VAEEncode(Node):
    """Encode an RGB image into a latent with the VAE; with a mask, prepare it for inpainting."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    vae: Vae = Field(description="the VAE, from LoadCheckpoint")
    image: Image = Field(
        description=(
            "the image; sides that are not multiples of 8 are resized down to the nearest multiple "
            "(Lanczos on 8-bit pixels, as diffusers does)"
        )
    )
    mask: Mask | None = Field(
        None,
        description=(
            "inpainting mask, 1 = repaint: binarized at 0.5 as diffusers does, resized to the image "
            "if it has the same shape (refused otherwise), attached to the latent as its noise mask "
            "together with the latent of the image with the masked area blanked (for 9-channel models)"
        ),
    )
    posterior: Literal["sample", "mode"] = Field(
        "sample",
        description="'sample': draw from the VAE's posterior with the seed (as diffusers); 'mode': its mean",
    )
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="random stream seed; AddNoise with seed null continues it (diffusers' one generator)",
    )
    tiled: Tiling = Field(
        "auto",
        description="encode in overlapping tiles, memory bounded by the tile: auto = above 768x768 pixels",
    )
    tile_size: int = Field(512, ge=64, le=4096, multiple_of=8, description="tile side in pixels")
    tile_overlap: int = Field(64, ge=0, le=1024, multiple_of=8, description="tile overlap in pixels")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.vae.decodes_only:
            raise ctx.error(
                "this tiny VAE has no encoder: put its _encoder file beside the _decoder one", "vae"
            )
        vae = self.vae.vae
        factor = self.vae.scale_factor
        pixels = self._pixels(factor, ctx)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        stream_start = generator.get_state()
        samples = self._encode(pixels, generator)
        noise_mask, masked_image = None, None
        if self.mask is not None:
            mask = self._mask(pixels, ctx)
            # Keep where the mask is < 0.5, blank (0 in [-1, 1], mid grey) where it repaints.
            blanked = pixels * 2.0 - 1.0
            blanked = blanked * (mask < 0.5)
            posterior = self._posterior(blanked)
            masked_image = MaskedImage(
                mean=posterior.mean,
                std=posterior.std,
                scaling_factor=float(vae.config.scaling_factor),
                sample=self.posterior == "sample",
                stream_start=stream_start,
            )
            latent_size = (pixels.shape[-2] // factor, pixels.shape[-1] // factor)
            noise_mask = F.interpolate(mask, size=latent_size).to(ctx.device, ctx.dtype)
            # Memory layout changes CPU rounding: diffusers' img2img keeps the VAE's channels-last
            # latents, its inpaint pipeline copies them (repeat) into a contiguous tensor.
            samples = samples.contiguous()
        latent = Latent(
            samples.to(ctx.device, ctx.dtype),
            noise_mask=noise_mask,
            rng_state=generator.get_state(),
            masked_image=masked_image,
        )
        return {"latent": latent}

    def _pixels(self, factor: int, ctx: RunContext) -> torch.Tensor:
        """The image in [0, 1], resized down to multiples of the VAE's factor if needed."""
        width, height = self.image.size
        size = (width - width % factor, height - height % factor)
        if 0 in size:
            raise ctx.error(
                f"the image is {width}x{height}: both sides must be at least {factor} pixels", "image"
            )
        if size == (width, height):
            return self.image.pixels.float()
        return resize_8bit(self.image.pixels, size, "lanczos")

    def _encode(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Scaled latents of ``pixels``: a posterior sample drawn from ``generator``, or its mode."""
        posterior = self._posterior(pixels * 2.0 - 1.0)
        latents = posterior.sample(generator) if self.posterior == "sample" else posterior.mode()
        return self.vae.to_latent(latents)

    def _posterior(self, pixels: torch.Tensor) -> Any:
        """The VAE's posterior of ``pixels`` in [-1, 1]; for a large image, its parameters (mean and
        log-variance) are blended from overlapping tiles."""
        vae = self.vae.vae
        height, width = pixels.shape[-2:]
        with torch.inference_mode():
            if not wants_tiles(self.tiled, width, height, self.tile_size):
                return self.vae.posterior(_vae_input(pixels, vae))

            def moments(window: torch.Tensor) -> torch.Tensor:
                return self.vae.posterior(_vae_input(window, vae)).parameters

            factor = self.vae.scale_factor
            parameters = run_tiled(moments, pixels, self.tile_size, self.tile_overlap, 1 / factor)
            return DiagonalGaussianDistribution(parameters.to(placement(vae)[1]))

    def _mask(self, pixels: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """The mask at the image's (resized) size, binarized: 1 = repaint, 0 = keep."""
        assert self.mask is not None
        batch, mask_batch = pixels.shape[0], self.mask.values.shape[0]
        if mask_batch not in (1, batch):
            raise ctx.error(f"{mask_batch} masks for {batch} images: give one mask or one per image", "mask")
        mask_w, mask_h = self.mask.size
        image_w, image_h = self.image.size
        if abs(mask_w / mask_h - image_w / image_h) > ASPECT_TOLERANCE * image_w / image_h:
            raise ctx.error(
                f"the mask is {mask_w}x{mask_h} but the image is {image_w}x{image_h}: a mask must have "
                "the image's size or at least its shape (aspect ratio) to be resized to it",
                "mask",
            )
        values = self.mask.values.float().cpu()
        size = (pixels.shape[-1], pixels.shape[-2])
        if (mask_w, mask_h) != size:
            values = resize_8bit(values, size, "lanczos")
        return (values >= 0.5).to(torch.float32)


def _vae_input(pixels: torch.Tensor, vae: torch.nn.Module) -> torch.Tensor:
    """Pixels in [-1, 1] on the VAE's device and dtype, laid out channels-last as diffusers' image
    processor leaves them (a view of NHWC numpy data): CPU convolutions round differently by layout."""
    return pixels.to(*placement(vae)).contiguous(memory_format=torch.channels_last)
