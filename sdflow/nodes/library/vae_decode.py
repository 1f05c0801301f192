"""VAEDecode: latents back to pixels with a VAE (tiled for large pictures)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.ops.batch_shape import exact_slices
from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.tiling import Tiling, run_tiled, wants_tiles
from sdflow.nodes.types import Image, Latent, Vae


class VAEDecode(Node):
    """Decode a latent into an RGB image with the VAE."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    vae: Vae = Field(description="the VAE, from LoadCheckpoint or LoadVAE")
    latent: Latent = Field(description="the latent to decode")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="noise seed of decoders that sample (a consistency decoder); others ignore it",
    )
    tiled: Tiling = Field(
        "auto",
        description="decode in overlapping tiles, memory bounded by the tile: auto = above 768x768 pixels",
    )
    tile_size: int = Field(512, ge=64, le=4096, multiple_of=8, description="tile side in pixels")
    tile_overlap: int = Field(64, ge=0, le=1024, multiple_of=8, description="tile overlap in pixels")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"image": Image(self._decode(self.latent.samples))}

    @classmethod
    def run_batch(cls, nodes: list[Node], ctx: RunContext) -> list[dict[str, Any]] | None:
        """Latents of one shape decoded by one VAE as a single batch (when decoding draws no noise)."""
        decodes = [node for node in nodes if isinstance(node, VAEDecode)]
        if len(decodes) != len(nodes):
            return None
        first = decodes[0]
        settings = (first.vae, first.tiled, first.tile_size, first.tile_overlap)
        shape = first.latent.samples.shape[1:]
        for node in decodes:
            if (node.vae, node.tiled, node.tile_size, node.tile_overlap) != settings:
                return None
            if node.latent.samples.shape[1:] != shape or node.vae.sampling_decoder:
                return None
        latents = [node.latent.samples for node in decodes]
        if exact_slices(placement(first.vae.vae)[0]):
            pixels = torch.cat([first._decode(latent) for latent in latents])
        else:
            pixels = first._decode(torch.cat(latents))
        sizes = [latent.shape[0] for latent in latents]
        return [{"image": Image(part)} for part in pixels.split(sizes)]

    def _decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], float32, on the CPU."""
        vae = self.vae.vae
        device, dtype = placement(vae)
        latents = self.vae.from_latent(samples.to(device, dtype))
        extra = {}
        if self.vae.sampling_decoder:
            # as diffusers' pipelines pass their generator; drawn on the CPU like all our noise
            extra["generator"] = torch.Generator().manual_seed(self.seed)
        factor = self.vae.scale_factor
        height, width = latents.shape[-2] * factor, latents.shape[-1] * factor

        def decode(z: torch.Tensor) -> torch.Tensor:
            return vae.decode(z, return_dict=False, **extra)[0]

        with torch.inference_mode():
            if not self.vae.sampling_decoder and wants_tiles(self.tiled, width, height, self.tile_size):
                decoded = run_tiled(
                    decode, latents, self.tile_size // factor, self.tile_overlap // factor, factor
                )
            else:
                decoded = decode(latents)
        return (decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
