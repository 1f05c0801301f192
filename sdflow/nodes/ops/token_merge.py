"""Token merging for Stable Diffusion's self-attention (ToMe for SD, Bolya & Hoffman 2023).

Before a self-attention layer at the highest resolution, the tokens are split into destinations (one
per ``stride × stride`` cell, chosen at random from a seeded generator, so runs repeat bit for bit) and
sources; the ``r`` sources most similar (cosine) to some destination are averaged into it. Attention
then runs on fewer tokens, and its output is copied back to every merged token ("unmerge"). The
matching is computed once per call from the layer's input.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

Merge = Callable[[torch.Tensor], torch.Tensor]
SEED = 0  # the destination pattern's seed: fixed, so a picture does not depend on earlier calls


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Matching:
    """Which tokens stay (``kept``, indices into the sources), which merge (``merged``) into which
    destination (``into``), and the source/destination index of every token."""

    sources: torch.Tensor  # (1, Ns, 1) token indices of the sources
    destinations: torch.Tensor  # (1, Nd, 1) token indices of the destinations
    kept: torch.Tensor  # (B, Ns - r, 1) positions among the sources
    merged: torch.Tensor  # (B, r, 1) positions among the sources
    into: torch.Tensor  # (B, r, 1) positions among the destinations
    tokens: int

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, channels = x.shape
        src = x.gather(1, self.sources.expand(batch, -1, channels))
        dst = x.gather(1, self.destinations.expand(batch, -1, channels))
        return src, dst

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N - r, C): kept sources, then destinations averaged with their sources."""
        src, dst = self.split(x)
        channels = x.shape[-1]
        kept = src.gather(1, self.kept.expand(-1, -1, channels))
        moving = src.gather(1, self.merged.expand(-1, -1, channels))
        dst = dst.scatter_reduce(1, self.into.expand(-1, -1, channels), moving, reduce="mean")
        return torch.cat([kept, dst], dim=1)

    def unmerge(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N - r, C) -> (B, N, C): every merged token takes its destination's value."""
        batch, _, channels = x.shape
        count = self.kept.shape[1]
        kept, dst = x[:, :count], x[:, count:]
        out = torch.empty(batch, self.tokens, channels, device=x.device, dtype=x.dtype)
        out.scatter_(1, self.destinations.expand(batch, -1, channels), dst)
        source_ids = self.sources.expand(batch, -1, 1)
        out.scatter_(1, source_ids.gather(1, self.kept).expand(-1, -1, channels), kept)
        moved = dst.gather(1, self.into.expand(-1, -1, channels))
        out.scatter_(1, source_ids.gather(1, self.merged).expand(-1, -1, channels), moved)
        return out


@functools.lru_cache(maxsize=64)
def destination_tokens(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """A (height*width,) bool mask of the destination tokens: one per full ``stride`` cell, at a
    seeded random place in it; tokens beyond the last full cell are sources. The same for every
    call of a size (remembered: each attention layer of each step asks)."""
    cells_y, cells_x = height // stride, width // stride
    generator = torch.Generator().manual_seed(SEED)
    pick = torch.randint(stride * stride, (cells_y, cells_x), generator=generator)
    chosen = torch.zeros(cells_y, cells_x, stride * stride, dtype=torch.bool)
    chosen.scatter_(2, pick[..., None], True)
    grid = (
        chosen.view(cells_y, cells_x, stride, stride)
        .permute(0, 2, 1, 3)
        .reshape(cells_y * stride, cells_x * stride)
    )
    mask = torch.zeros(height, width, dtype=torch.bool)
    mask[: cells_y * stride, : cells_x * stride] = grid
    return mask.flatten().to(device)


def match(x: torch.Tensor, height: int, width: int, ratio: float, stride: int = 2) -> tuple[Merge, Merge]:
    """(merge, unmerge) for tokens ``x`` (B, height*width, C) removing ``ratio`` of them."""
    batch, tokens, _ = x.shape
    r = int(tokens * ratio)
    if r <= 0 or height < stride or width < stride:
        return _identity, _identity
    with torch.no_grad():
        is_dst = destination_tokens(height, width, stride, x.device)
        order = torch.arange(tokens, device=x.device)
        destinations, sources = order[is_dst][None, :, None], order[~is_dst][None, :, None]
        r = min(r, sources.shape[1])
        unit = x / x.norm(dim=-1, keepdim=True)
        src = unit.gather(1, sources.expand(batch, -1, unit.shape[-1]))
        dst = unit.gather(1, destinations.expand(batch, -1, unit.shape[-1]))
        best, best_dst = (src @ dst.transpose(1, 2)).max(dim=-1)
        ranked = best.argsort(dim=-1, descending=True)[..., None]
        merged, kept = ranked[:, :r], ranked[:, r:]
        into = best_dst[..., None].gather(1, merged)
    matching = Matching(sources, destinations, kept, merged, into, tokens)
    return matching.merge, matching.unmerge
