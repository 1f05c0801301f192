"""Tiled VAE work in bounded memory: split a large tensor into overlapping tiles, run each, and
blend the results with weights that fall off linearly across the overlaps (no visible seams).

Memory then grows with the tile size, not the image size (the VAE's activations at full resolution
are what exhausts memory at 1024x1024 and beyond); the price is that the VAE's mid-block attention
sees one tile at a time, so results differ slightly from an untiled pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

Tiling = Literal["auto", "on", "off"]
AUTO_PIXELS = 768 * 768  # 'auto' tiles images with more pixels than this


def wants_tiles(mode: Tiling, width: int, height: int, tile: int) -> bool:
    """Whether an image of width x height pixels is processed in tiles of ``tile`` pixels."""
    if mode == "off" or (width <= tile and height <= tile):
        return False
    return mode == "on" or width * height > AUTO_PIXELS


def run_tiled(
    function: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    scale: float,
    margin: int = 0,
) -> torch.Tensor:
    """``function`` over overlapping ``tile`` x ``tile`` windows of ``x`` (N, C, H, W), blended.

    ``function`` maps a window of side s to an output of side s * ``scale`` (8 for decoding, 1/8
    for encoding); ``tile`` and ``overlap`` are in ``x``'s units and keep that exact. ``margin``
    (under half the overlap): the outputs that near a window's inner edge get no weight (where a
    model's zero padding shows), the ramp spans the rest of the overlap."""
    height, width = x.shape[-2:]
    ys, xs = _starts(height, tile, overlap), _starts(width, tile, overlap)
    out: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    for top in ys:
        for left in xs:
            window = x[..., top : top + tile, left : left + tile]
            result = function(window).float()
            if out is None:
                out = result.new_zeros((*result.shape[:2], round(height * scale), round(width * scale)))
                weights = result.new_zeros((1, 1, *out.shape[-2:]))
            assert weights is not None
            sides = round(overlap * scale), round(margin * scale)
            ramp = _ramp(result.shape[-2], *sides, top > 0, top + tile < height)
            ramp = ramp[:, None] * _ramp(result.shape[-1], *sides, left > 0, left + tile < width)
            oy, ox = round(top * scale), round(left * scale)
            region = (..., slice(oy, oy + result.shape[-2]), slice(ox, ox + result.shape[-1]))
            out[region] += result * ramp.to(result.device)
            weights[region] += ramp.to(result.device)
    assert out is not None and weights is not None
    return out / weights


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Window starts covering 0..size with windows of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _ramp(length: int, overlap: int, margin: int, falls_in: bool, falls_out: bool) -> torch.Tensor:
    """Weights along one side: 1 in the middle, rising linearly over ``overlap`` at an edge shared
    with a neighbouring window (0 only over ``margin``, where the neighbour's weight is 1)."""
    ramp = torch.ones(length)
    if overlap <= 0:
        return ramp
    margin = max(0, min(margin, (overlap - 1) // 2))
    span = overlap - 2 * margin
    rise = torch.cat(
        [torch.zeros(margin), torch.arange(1, span + 1, dtype=torch.float32) / (span + 1), torch.ones(margin)]
    )
    if falls_in:
        ramp[:overlap] = torch.minimum(ramp[:overlap], rise)
    if falls_out:
        ramp[-overlap:] = torch.minimum(ramp[-overlap:], rise.flip(0))
    return ramp
