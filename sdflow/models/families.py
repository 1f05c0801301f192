"""Model families: what differs between SD 1.x, SD 2.x, SDXL base and SDXL refiner, in one object.

Nodes ask the family (carried by Model, Clip and Conditioning) instead of branching on names; the
loaders decide the family from a checkpoint's files (``sdflow.models.detect``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# SDXL's extra UNet inputs ("time ids"), in the order its UNet reads them.
SIZE_IDS = ("original_size", "crops_coords_top_left", "target_size")
AESTHETIC_IDS = ("original_size", "crops_coords_top_left", "aesthetic_score")
# diffusers' default aesthetic scores for the refiner: what to draw / what to steer away from.
AESTHETIC_POSITIVE = 6.0
AESTHETIC_NEGATIVE = 2.5


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family: its diffusers folders and whether it gives the pooled embedding."""

    folder: str  # "text_encoder" or "text_encoder_2"
    tokenizer_folder: str
    projection: bool = False  # CLIPTextModelWithProjection: its text_embeds are the pooled embedding


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL's micro-conditioning for one prompt; None means diffusers' default, resolved at denoise time.

    Sizes are (width, height) in pixels (None: the picture being denoised); the crop is (left, top)."""

    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    aesthetic_score: float | None = None  # None: 6.0 as positive, 2.5 as negative (refiner only)

    def ids(self, names: tuple[str, ...], size: tuple[int, int], negative: bool) -> list[float]:
        """The time ids ``names`` asks for, for a picture of ``size`` (width, height)."""
        values: list[float] = []
        for name in names:
            if name == "original_size":
                width, height = self.original_size or size
                values += [height, width]  # diffusers' (height, width) order
            elif name == "crops_coords_top_left":
                left, top = self.crop_top_left
                values += [top, left]
            elif name == "target_size":
                width, height = self.target_size or size
                values += [height, width]
            else:
                default = AESTHETIC_NEGATIVE if negative else AESTHETIC_POSITIVE
                values.append(default if self.aesthetic_score is None else self.aesthetic_score)
        return values


@dataclass(frozen=True)
class Family:
    """One model family: how text becomes conditioning and what the UNet expects."""

    name: str  # stable id, used in messages, cache keys and `sdflow models`
    label: str  # for people: "SD 1.x"
    default_size: int  # the side its UNet was trained at, in pixels
    encoders: tuple[TextEncoderSlot, ...]
    context_dim: int  # width of the conditioning the UNet's cross-attention reads (full-size model)
    # SDXL reads the penultimate layer's raw hidden states (no final norm), concatenated over encoders;
    # SD 1.x/2.x read the last layer (after the final norm) unless clip_skip asks for an earlier one.
    penultimate: bool = False
    time_ids: tuple[str, ...] = ()  # SDXL's size / aesthetic conditioning, in UNet order
    tiny_vae: str = "taesd"  # the stem of its latent space's TAESD files in vae_approx (ComfyUI's names)

    @property
    def text_encoders(self) -> int:
        return len(self.encoders)

    @property
    def pooled(self) -> bool:
        """The UNet also takes a pooled text embedding (with the time ids, as added_cond_kwargs)."""
        return bool(self.time_ids)

    @property
    def time_id_count(self) -> int:
        """How many numbers the time ids are (a size or a crop is two, a score one)."""
        return sum(1 if name == "aesthetic_score" else 2 for name in self.time_ids)

    def __str__(self) -> str:
        return self.label

    def added_cond_kwargs(
        self,
        conditionings: list[tuple[Any, bool]],
        batch: int,
        size: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, torch.Tensor] | None:
        """The UNet's extra inputs for ``conditionings`` [(Conditioning, is_negative)...] in batch order,
        each repeated to ``batch`` rows, for a picture of ``size`` (width, height); None if it takes none."""
        if not self.time_ids:
            return None
        pooled, time_ids = [], []
        for conditioning, negative in conditionings:
            embeds = conditioning.pooled
            pooled.append(embeds.repeat_interleave(batch // embeds.shape[0], 0))
            ids = conditioning.sizes.ids(self.time_ids, size, negative)
            time_ids.append(torch.tensor([ids], dtype=dtype).repeat(batch, 1))
        return {
            "text_embeds": torch.cat(pooled).to(device, dtype),
            "time_ids": torch.cat(time_ids).to(device, dtype),
        }


_CLIP_L = TextEncoderSlot("text_encoder", "tokenizer")

SD15 = Family("sd15", "SD 1.x", 512, (_CLIP_L,), 768)
SD2 = Family("sd2", "SD 2.x", 768, (_CLIP_L,), 1024)
SDXL = Family(
    "sdxl",
    "SDXL",
    1024,
    (_CLIP_L, TextEncoderSlot("text_encoder_2", "tokenizer_2", projection=True)),
    2048,
    penultimate=True,
    time_ids=SIZE_IDS,
    tiny_vae="taesdxl",
)
SDXL_REFINER = Family(
    "sdxl_refiner",
    "SDXL refiner",
    1024,
    (TextEncoderSlot("text_encoder_2", "tokenizer_2", projection=True),),
    1280,
    penultimate=True,
    time_ids=AESTHETIC_IDS,
    tiny_vae="taesdxl",
)

FAMILIES: dict[str, Family] = {f.name: f for f in (SD15, SD2, SDXL, SDXL_REFINER)}


def get(name: str) -> Family:
    """The family called ``name`` (KeyError for an unknown one)."""
    return FAMILIES[name]
