"""Token ids to conditioning, per text encoder, the way each family reads its encoders.

``encode_ids`` is the one step every prompt feature builds on (weights, long prompts, BREAK call it
per chunk and per encoder); ``encode_text`` is the plain path: one 77-token chunk per encoder, as
diffusers' pipelines tokenize.
"""

from __future__ import annotations

from typing import Any

import torch

from sdflow.models.families import Family


class ClipSkipError(ValueError):
    """clip_skip asks for more layers than the text encoder has."""


def tokenize(tokenizer: Any, text: str, device: torch.device) -> torch.Tensor:
    """(1, model_max_length) ids, truncated and padded with the tokenizer's own pad token."""
    return tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def check_clip_skip(encoder: torch.nn.Module, family: Family, clip_skip: int) -> None:
    """Raise ClipSkipError if ``clip_skip`` reaches below the encoder's first layer."""
    layers = encoder.config.num_hidden_layers
    largest = layers - 1 - int(family.penultimate)
    if clip_skip > largest:
        raise ClipSkipError(
            f"clip_skip {clip_skip} is too large: this text encoder has {layers} layers "
            f"(at most {largest} for {family})"
        )


def encode_ids(
    encoder: torch.nn.Module, ids: torch.Tensor, family: Family, clip_skip: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states (batch, tokens, dim) and, for a projecting encoder, its pooled text embedding.

    SD 1.x/2.x: the last layer after the final norm; ``clip_skip`` k > 0 takes layer -(k+1) through
    the final norm (A1111 and diffusers). SDXL: the raw penultimate layer, -(k+2) with clip_skip k."""
    with torch.inference_mode():
        if not family.penultimate and clip_skip == 0:
            output = encoder(ids)
            return output[0], None
        output = encoder(ids, output_hidden_states=True)
        if family.penultimate:
            hidden = output.hidden_states[-(clip_skip + 2)]
        else:
            # transformers 5 dropped the `text_model` wrapper; older releases still have it.
            final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
            hidden = final_norm(output.hidden_states[-(clip_skip + 1)])
        pooled = output[0] if output[0].ndim == 2 else None  # text_embeds of a projecting encoder
    return hidden, pooled


def encode_text(
    pairs: list[tuple[Any, torch.nn.Module]], family: Family, text: str, clip_skip: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prompt through every encoder: hidden states concatenated on the last axis, and the pooled
    embedding of the (last) projecting encoder, both in the encoders' dtype."""
    states, pooled = [], None
    for tokenizer, encoder in pairs:
        check_clip_skip(encoder, family, clip_skip)
        ids = tokenize(tokenizer, text, encoder.device)
        hidden, encoder_pooled = encode_ids(encoder, ids, family, clip_skip)
        states.append(hidden.to(encoder.dtype))
        if encoder_pooled is not None:
            pooled = encoder_pooled.to(encoder.dtype)
    return torch.cat(states, dim=-1), pooled
