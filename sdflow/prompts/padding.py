"""Padding conditioning with empty-prompt chunks, so that conditionings of different lengths combine."""

from __future__ import annotations

import torch


def pad_tokens(embeds: torch.Tensor, empty: torch.Tensor | None, tokens: int) -> torch.Tensor:
    """``embeds`` (batch, n, dim) lengthened to ``tokens``: copies of ``empty`` (1, chunk, dim) appended
    (A1111's padding); without an empty chunk, ``embeds`` repeated whole (ComfyUI's, which leaves
    cross-attention unchanged). ValueError when neither fits a whole number of times."""
    length = embeds.shape[1]
    missing = tokens - length
    if missing == 0:
        return embeds
    if missing > 0 and empty is not None and missing % empty.shape[1] == 0:
        filler = empty.to(embeds.device, embeds.dtype).expand(embeds.shape[0], -1, -1)
        return torch.cat([embeds, filler.repeat(1, missing // empty.shape[1], 1)], dim=1)
    if missing > 0 and empty is None and tokens % length == 0:
        return embeds.repeat(1, tokens // length, 1)
    raise ValueError(f"cannot pad a conditioning of {length} tokens to {tokens}")
