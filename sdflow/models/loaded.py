"""A loaded checkpoint's parts, and the small fixes every loader applies to them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdflow.models.families import SD15, Family


@dataclass(frozen=True)
class LoadOptions:
    """How to load a checkpoint beyond where it is."""

    prediction: str = "auto"  # "auto", "epsilon" or "v_prediction"
    config: Path | None = None  # a diffusers folder describing a single file's architecture
    allow_pickle: bool = False  # read pickle weight files (weights-only)


@dataclass
class LoadedCheckpoint:
    """The parts of a checkpoint, on their device and in their dtypes."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    family: Family = SD15
    # further text encoders and their tokenizers, in order (SDXL base has a second one)
    more_text_encoders: list[torch.nn.Module] = field(default_factory=list)
    more_tokenizers: list[Any] = field(default_factory=list)
    # an unCLIP checkpoint's (CLIP vision model, its preprocessing, unclip.ImageNoising)
    unclip: tuple[Any, Any, Any] | None = None


def text_encoder_class(config: Any) -> type:
    """CLIPTextModelWithProjection when the config names it (SDXL's second encoder), else
    CLIPTextModel."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    names = getattr(config, "architectures", None) or []
    return CLIPTextModelWithProjection if "CLIPTextModelWithProjection" in names else CLIPTextModel


def tokenizer_fixed(tokenizer: Any, text_encoder: torch.nn.Module) -> Any:
    """The tokenizer with a usable ``model_max_length``: a tokenizer_config.json without one makes
    transformers report ~1e30, which no padding can use; the text encoder's position count is the
    real limit."""
    limit = getattr(text_encoder.config, "max_position_embeddings", None)  # T5: relative positions
    if limit is not None and not 0 < tokenizer.model_max_length <= int(limit):
        tokenizer.model_max_length = limit
    return tokenizer
