"""Predicting with combined, area, mask and timestep-range conditioning, as ComfyUI's sampler does.

Each plain conditioning active at the step is evaluated on its area of the latent; its prediction is
weighted (strength × its mask, or edges feathered where the area does not reach the latent's border:
over min(8, a quarter of the area's side) cells), the weighted predictions are summed, and the sum is
divided by the summed weights (parts of the latent no conditioning covers predict 0, as in ComfyUI).
Every area of one CFG side is also predicted on the others (``opposite_areas``), as ComfyUI does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from sdflow.nodes.types import VAE_SCALE, Conditioning, Region

FEATHER = 8  # latent cells over which an area's inner edges fade
EMPTY = 1e-37  # the weight of a latent cell no conditioning covers
LAST_TIMESTEP = 999

Area = tuple[int, int, int, int]  # (top, left, height, width) in latent cells
Call = Callable[[torch.Tensor, Conditioning], torch.Tensor]  # (model input, piece) -> prediction


def active(region: Region | None, timestep: float) -> bool:
    """Whether a conditioning acts at ``timestep``: inside its range of the schedule, measured on the
    training timesteps as ComfyUI measures it on sigmas (fraction p = timestep (1 - p) × 999)."""
    if region is None:
        return True
    if region.start > 0 and timestep > (1 - region.start) * LAST_TIMESTEP:
        return False
    return not (region.end < 1 and timestep < (1 - region.end) * LAST_TIMESTEP)


def resized_mask(region: Region, size: tuple[int, int]) -> torch.Tensor | None:
    """The region's mask at the latent's (height, width), bilinear as ComfyUI resizes it."""
    if region.mask is None:
        return None
    mask = region.mask.float().reshape(-1, 1, *region.mask.shape[-2:])
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False)


def latent_area(region: Region | None, size: tuple[int, int]) -> Area | None:
    """The region's area in latent cells, cut to the latent; None for the whole latent."""
    height, width = size
    if region is None:
        return None
    if region.mask_bounds and region.mask is not None:
        mask = resized_mask(region, size)
        rows = torch.nonzero(mask.abs().amax(dim=(0, 1, 3)) > 0).flatten()  # type: ignore[union-attr]
        cols = torch.nonzero(mask.abs().amax(dim=(0, 1, 2)) > 0).flatten()  # type: ignore[union-attr]
        if len(rows) == 0:
            return (0, 0, 0, 0)
        top, left = int(rows[0]), int(cols[0])
        return (top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1)
    if region.area is None:
        return None
    x, y, w, h = region.area
    if region.percent:
        area = (round(y * height), round(x * width), max(1, round(h * height)), max(1, round(w * width)))
    else:
        area = (int(y) // VAE_SCALE, int(x) // VAE_SCALE, int(h) // VAE_SCALE, int(w) // VAE_SCALE)
    top, left = min(area[0], height), min(area[1], width)
    return (top, left, min(area[2], height - top), min(area[3], width - left))


def weight(
    region: Region | None, area: Area | None, size: tuple[int, int], like: torch.Tensor
) -> torch.Tensor:
    """The per-cell weight of a conditioning's prediction on its area (shape broadcastable to it)."""
    height, width = size
    top, left, h, w = area if area is not None else (0, 0, height, width)
    strength = region.strength if region is not None else 1.0
    mask = resized_mask(region, size) if region is not None else None
    if mask is not None:
        cut = mask[..., top : top + h, left : left + w] * region.mask_strength  # type: ignore[union-attr]
        return cut.to(like) * strength
    mult = torch.full((1, 1, h, w), strength, device=like.device, dtype=like.dtype)
    if area is None:
        return mult
    cells = min(FEATHER, h // 4)  # ComfyUI fades over at most a quarter of the area's side
    for t in range(cells):
        fade = (1.0 / cells) * (t + 1)
        if top != 0:
            mult[..., t, :] *= fade
        if top + h < height:
            mult[..., h - 1 - t, :] *= fade
    cells = min(FEATHER, w // 4)
    for t in range(cells):
        fade = (1.0 / cells) * (t + 1)
        if left != 0:
            mult[..., :, t] *= fade
        if left + w < width:
            mult[..., :, w - 1 - t] *= fade
    return mult


def _inside(inner: Area, outer: Area) -> bool:
    top, left, h, w = inner
    o_top, o_left, o_h, o_w = outer
    return top >= o_top and left >= o_left and top + h <= o_top + o_h and left + w <= o_left + o_w


def opposite_areas(sides: list[Conditioning], size: tuple[int, int]) -> list[Conditioning]:
    """Each side with, for every area piece of another side, a piece acting on that same area: the
    side's smallest piece containing the area (a whole-picture one failing that), its embeddings with
    the other piece's region; none where the side already has a piece of exactly that area. So every
    area is predicted on both CFG sides, as ComfyUI's sampler pairs them (``sides`` in batch order,
    positive last; ComfyUI pairs from the positive on)."""
    pieces = [list(side.pieces) for side in sides]
    order = list(reversed(range(len(sides))))
    for k in order:
        for piece in list(pieces[k]):
            area = latent_area(piece.region, size)
            if area is None:
                continue
            for other in order:
                if other == k:
                    continue
                smallest, smallest_area = None, None
                for candidate in pieces[other]:
                    candidate_area = latent_area(candidate.region, size)
                    if candidate_area is None:
                        if smallest is None:
                            smallest = candidate
                    elif _inside(area, candidate_area) and (
                        smallest is None
                        or smallest_area is None
                        or _cells(smallest_area) > _cells(candidate_area)
                    ):
                        smallest, smallest_area = candidate, candidate_area
                if smallest is None or smallest_area == area:
                    continue
                pieces[other].append(replace(smallest, region=piece.region, parts=()))
    return [
        side if len(found) == len(side.pieces) else replace(side, parts=tuple(found))
        for side, found in zip(sides, pieces, strict=True)
    ]


def _cells(area: Area) -> int:
    return area[2] * area[3]


@dataclass(frozen=True)
class Prepared:
    """One piece of a side, made ready for a loop: its area in latent cells and its weight there."""

    piece: Conditioning
    area: Area
    weight: torch.Tensor


def prepare(side: Conditioning, size: tuple[int, int], like: torch.Tensor) -> list[Prepared]:
    """The pieces of one CFG side with their areas and weights, computed once per loop (masks are
    resized here, not at every step); pieces with an empty area are left out."""
    prepared = []
    for piece in side.pieces:
        area = latent_area(piece.region, size)
        cells = area if area is not None else (0, 0, *size)
        if cells[2] and cells[3]:
            prepared.append(Prepared(piece, cells, weight(piece.region, area, size, like)))
    return prepared


def predict(
    call: Call,
    model_input: torch.Tensor,
    extra: torch.Tensor | None,
    timestep: float,
    pieces: list[Prepared],
    channels: int,
) -> torch.Tensor:
    """One CFG side's prediction for ``model_input`` (batch, C, h, w; ``extra`` the inpainting
    channels or None) from its pieces active at ``timestep``, weighted and normalised as ComfyUI does."""
    size = (model_input.shape[-2], model_input.shape[-1])
    shape = (model_input.shape[0], channels, *size)
    total = torch.zeros(shape, device=model_input.device, dtype=model_input.dtype)
    count = torch.full(shape, EMPTY, device=model_input.device, dtype=model_input.dtype)
    for ready in pieces:
        if not active(ready.piece.region, timestep):
            continue
        top, left, h, w = ready.area
        window = model_input[..., top : top + h, left : left + w]
        if extra is not None:
            window = torch.cat([window, extra[..., top : top + h, left : left + w]], dim=1)
        total[..., top : top + h, left : left + w] += call(window, ready.piece) * ready.weight
        count[..., top : top + h, left : left + w] += ready.weight
    return total / count
