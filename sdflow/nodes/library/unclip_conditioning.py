"""unCLIPConditioning: prompt with a picture's CLIP image embeds (unCLIP models; SDXL revision)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models.unclip import MAX_NOISE_LEVEL
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning
from sdflow.nodes.types_vision import ClipVisionOutput, UnclipEntry

MAX_STRENGTH = 10.0  # ComfyUI's bound


class unCLIPConditioning(Node):
    """Add a picture to the conditioning, as its CLIP image embeds, noise-augmented.

    An unCLIP checkpoint (SD 2.1 unCLIP) reads them as its UNet's class labels, as diffusers'
    StableUnCLIPImg2ImgPipeline; on SDXL they replace the prompt's pooled embedding ("revision", as
    ComfyUI does it; pair it with ConditioningZeroOut of the text to prompt with the picture alone).
    Several unCLIPConditioning nodes chain: the pictures' embeddings are summed."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning"}

    conditioning: Conditioning = Field(description="the conditioning to add the picture to")
    clip_vision_output: ClipVisionOutput = Field(description="from CLIPVisionEncode")
    strength: float = Field(
        1.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, description="scale of the picture's embeds"
    )
    noise_augmentation: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="how much noise is added to the embeds (0..1 of the noise levels): more strays further",
    )
    seed: int = Field(0, ge=0, description="seed of the augmentation's noise")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        embeds = self.clip_vision_output.image_embeds
        pooled = self.conditioning.pooled
        if pooled is not None and embeds.shape[-1] != pooled.shape[-1]:
            raise ctx.error(
                f"the CLIP vision output is {embeds.shape[-1]} wide but this conditioning's pooled embedding "
                f"is {pooled.shape[-1]}: for revision use the CLIP vision model of the text encoder's kind "
                "(SDXL: ViT-bigG)",
                "clip_vision_output",
            )
        level = round((MAX_NOISE_LEVEL - 1) * self.noise_augmentation)
        generator = torch.Generator().manual_seed(self.seed)
        entries = []
        for row in embeds:  # each picture of the batch (ComfyUI sums them)
            noise = torch.randn((1, row.shape[-1]), generator=generator, dtype=torch.float32)
            entries.append(UnclipEntry(row[None].float().cpu(), self.strength, level, noise))
        unclip = (*self.conditioning.unclip, *entries)
        return {"conditioning": replace(self.conditioning, unclip=unclip)}
