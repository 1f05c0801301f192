"""DenoiseLoop's UNet calls with combined, area and timestep-range conditioning: each guidance side's
pieces with their text inputs, made once per loop, and the predictions ``regions.predict`` blends."""

from __future__ import annotations

from typing import Any

import torch

from sdflow.nodes.ops import regions
from sdflow.nodes.types import Conditioning, Model

LATENT_TO_PIXELS = 8  # every family's VAE: the picture size the time ids default to


def repeat_to(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    """``embeds`` (a batch dividing ``batch``) as ``batch`` rows, each row repeated in place."""
    return embeds if embeds.shape[0] == batch else embeds.repeat_interleave(batch // embeds.shape[0], 0)


def sides(
    model: Model, x: torch.Tensor, sides: tuple[tuple[Conditioning, bool], ...]
) -> list[tuple[list[regions.Prepared], dict]]:
    """Each guidance side's pieces (areas and weights) and each piece's UNet text inputs, made once
    per loop, in batch order."""
    batch, size = x.shape[0], (x.shape[-1] * LATENT_TO_PIXELS, x.shape[-2] * LATENT_TO_PIXELS)
    paired = regions.opposite_areas([side for side, _ in sides], tuple(x.shape[-2:]))
    sides = tuple((side, negative) for side, (_, negative) in zip(paired, sides, strict=True))
    prepared = []
    for side, negative in sides:
        pieces = regions.prepare(side, tuple(x.shape[-2:]), x)
        inputs = {
            id(ready.piece): {
                "encoder_hidden_states": repeat_to(ready.piece.embeds, batch).to(x.device, x.dtype),
                "added_cond_kwargs": model.family.added_cond_kwargs(
                    [(ready.piece, negative)], batch, size, x.device, x.dtype
                ),
            }
            for ready in pieces
        }
        prepared.append((pieces, inputs))
    return prepared


def predictions(
    unet: Any, scaled: torch.Tensor, t: Any, extra: torch.Tensor | None, sides: list, guiding: bool
) -> torch.Tensor:
    """[negative, positive] (or positive) predictions for the scaled latent, each from its pieces
    as ComfyUI blends combined, area and timestep-range conditioning (``regions.predict``)."""
    single = None if extra is None else extra[: scaled.shape[0]]
    predictions = []
    for pieces, inputs in sides if guiding else sides[-1:]:

        def call(window: torch.Tensor, piece: Conditioning, inputs: dict = inputs) -> torch.Tensor:
            return unet(window, t, return_dict=False, **inputs[id(piece)])[0]

        predictions.append(regions.predict(call, scaled, single, float(t), pieces, unet.config.out_channels))
    return torch.cat(predictions)
