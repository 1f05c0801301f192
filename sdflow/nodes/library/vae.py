"""VAE nodes: LoadVAE (a VAE of its own) and VAEDecode (latents back to pixels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models import vae as vae_files
from sdflow.models import weights
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.noise import MAX_SEED
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types import Image, Latent, Vae


class LoadVAE(ModelFileNode):
    """Load a VAE: a single file (LDM or diffusers layout) or a diffusers folder, to replace a model's."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"vae": Vae}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "vae"

    file: str = Field(
        min_length=1,
        description=(
            "a VAE .safetensors (e.g. sd-vae-ft-mse) or a diffusers VAE folder (AutoencoderKL or "
            "ConsistencyDecoderVAE): a path, or a name in the model folders' vae (VAE) folders"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.pt/.ckpt/.bin), with torch.load(weights_only=True)"
    )

    @classmethod
    def read_from(cls, path: Path) -> Path:
        return vae_files.source(path)  # a pipeline folder's vae/ only, not its UNet

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            vae = vae_files.load(path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle)
        except (weights.WeightFileError, vae_files.VaeError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"vae": Vae(vae, sampling_decoder=type(vae).__name__ == "ConsistencyDecoderVAE")}


class VAEDecode(Node):
    """Decode a latent into an RGB image with the VAE."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    vae: Vae = Field(description="the VAE, from LoadCheckpoint or LoadVAE")
    latent: Latent = Field(description="the latent to decode")
    seed: int = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="noise seed of decoders that sample (a consistency decoder); others ignore it",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        vae = self.vae.vae
        weights = next(vae.parameters())  # vae.device/.dtype walk every submodule: slow per call
        latents = self.latent.samples.to(weights.device, weights.dtype) / vae.config.scaling_factor
        extra = {}
        if self.vae.sampling_decoder:
            # as diffusers' pipelines pass their generator; drawn on the CPU like all our noise
            extra["generator"] = torch.Generator().manual_seed(self.seed)
        with torch.inference_mode():
            decoded = vae.decode(latents, return_dict=False, **extra)[0]
        pixels = (decoded.float() / 2 + 0.5).clamp(0, 1).cpu()
        return {"image": Image(pixels)}
