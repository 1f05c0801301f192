"""How deep a family reads its text encoders, checked before encoding.

The encoding itself (token ids per chunk and per encoder, weights, embeddings) is ``sdflow.prompts``;
``sdflow.prompts.encode.Layer.of`` turns a family's rule and ``clip_skip`` into the layer it reads.
"""

from __future__ import annotations

import torch

from sdflow.models.families import Family


class ClipSkipError(ValueError):
    """clip_skip asks for more layers than the text encoder has."""


def check_clip_skip(encoder: torch.nn.Module, family: Family, clip_skip: int) -> None:
    """Raise ClipSkipError if ``clip_skip`` reaches below the encoder's first layer."""
    layers = encoder.config.num_hidden_layers
    largest = layers - 1 - int(family.penultimate)
    if clip_skip > largest:
        raise ClipSkipError(
            f"clip_skip {clip_skip} is too large: this text encoder has {layers} layers "
            f"(at most {largest} for {family})"
        )
