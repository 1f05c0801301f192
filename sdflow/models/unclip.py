"""unCLIP: a picture's CLIP image embeds, noise-augmented, as the UNet's class labels (SD 2.1 unCLIP) or
as SDXL's pooled embedding ("revision", as ComfyUI does it).

The augmentation is diffusers' StableUnCLIPImg2ImgPipeline.noise_image_embeddings: normalise with the
checkpoint's image_normalizer (mean, std), add the image_noising_scheduler's noise at ``noise_level``,
un-normalise, and append the level's timestep embedding. ComfyUI scales the result by the strength
and sums several pictures' (``class_labels``); for SDXL it keeps the embeds part as the pooled text
embedding, with no normaliser and a squaredcos_cap_v2 schedule (``revision_pooled``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdflow.models.folder_configs import listed

MAX_NOISE_LEVEL = 1000
REVISION_SCHEDULE = {"num_train_timesteps": MAX_NOISE_LEVEL, "beta_schedule": "squaredcos_cap_v2"}


@dataclass(frozen=True, eq=False)
class ImageNoising:
    """An unCLIP checkpoint's image-embedding augmentation: normaliser and noise schedule."""

    mean: torch.Tensor  # (1, dim)
    std: torch.Tensor  # (1, dim)
    scheduler: Any  # a diffusers DDPMScheduler

    @classmethod
    def plain(cls, width: int) -> ImageNoising:
        """No normaliser, ComfyUI's squaredcos_cap_v2 schedule (SDXL revision)."""
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(**REVISION_SCHEDULE)
        return cls(torch.zeros(1, width), torch.ones(1, width), scheduler)

    def noised(self, embeds: torch.Tensor, noise: torch.Tensor, level: int) -> torch.Tensor:
        """``embeds`` (rows, dim) with the schedule's noise at ``level``, in the embeds' own scale."""
        mean, std = self.mean.to(embeds), self.std.to(embeds)
        scaled = (embeds - mean) / std
        levels = torch.tensor([level] * embeds.shape[0], device=embeds.device)
        scaled = self.scheduler.add_noise(scaled, noise.to(scaled), levels)
        return scaled * std + mean

    def class_labels(
        self, entries: tuple[Any, ...], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """The UNet's class labels (1, 2 x dim) for unCLIPConditioning ``entries`` (UnclipEntry): each
        [noised embeds, level embedding] x strength, summed; zeros for none."""
        from diffusers.models.embeddings import get_timestep_embedding

        width = self.mean.shape[-1]
        total = torch.zeros(1, 2 * width, device=device, dtype=torch.float32)
        for entry in entries:
            embeds = entry.embeds.to(device, torch.float32)
            level = torch.tensor([entry.noise_level], device=device)
            step = get_timestep_embedding(level, width, flip_sin_to_cos=True, downscale_freq_shift=0)
            noised = self.noised(embeds, entry.noise.to(device, torch.float32), entry.noise_level)
            total = total + entry.strength * torch.cat([noised, step.to(noised)], dim=1)
        return total.to(dtype)


def revision_pooled(entries: tuple[Any, ...]) -> torch.Tensor:
    """SDXL's pooled embedding (1, dim) from unCLIPConditioning entries, as ComfyUI's sdxl_pooled:
    each picture's embeds noised at its level x strength, summed."""
    first = entries[0].embeds
    noising = ImageNoising.plain(first.shape[-1])
    total = torch.zeros_like(first, dtype=torch.float32)
    for entry in entries:
        embeds = entry.embeds.float()
        total = total + entry.strength * noising.noised(embeds, entry.noise.to(embeds), entry.noise_level)
    return total


def is_unclip_folder(folder: Path) -> bool:
    """A diffusers folder of StableUnCLIPImg2ImgPipeline's layout (image encoder, normaliser, noising
    scheduler beside the usual parts)."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    parts = ("image_encoder", "image_normalizer", "image_noising_scheduler")
    return all(listed(index.get(part)) for part in parts)


def load_parts(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any, ImageNoising]:
    """(CLIP vision model, its preprocessing, the image noising) of an unCLIP folder."""
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )

    from sdflow.models import clip_vision

    model, preprocess = clip_vision.load(folder / "image_encoder", device, dtype)
    normalizer = StableUnCLIPImageNormalizer.from_pretrained(str(folder / "image_normalizer"))
    scheduler = DDPMScheduler.from_pretrained(str(folder / "image_noising_scheduler"))
    mean, std = normalizer.mean.detach().float().to(device), normalizer.std.detach().float().to(device)
    return model, preprocess, ImageNoising(mean, std, scheduler)
