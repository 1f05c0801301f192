"""Padding conditioning with empty-prompt chunks, so that conditionings of different lengths combine."""

from __future__ import annotations

import torch


def pad_tokens(embeds: torch.Tensor, empty: torch.Tensor | None, tokens: int) -> torch.Tensor:
    """``embeds`` (batch, n, dim) with copies of ``empty`` (1, chunk, dim) appended up to ``tokens``;
    ValueError when that is not a whole number of chunks (or there is no empty chunk to pad with)."""
    missing = tokens - embeds.shape[1]
    if missing == 0:
        return embeds
    what = f"cannot pad a conditioning of {embeds.shape[1]} tokens to {tokens}"
    if empty is None:
        raise ValueError(f"{what}: it carries no empty-prompt chunk")
    if missing < 0 or missing % empty.shape[1]:
        raise ValueError(what)
    filler = empty.to(embeds.device, embeds.dtype).expand(embeds.shape[0], -1, -1)
    return torch.cat([embeds, filler.repeat(1, missing // empty.shape[1], 1)], dim=1)
