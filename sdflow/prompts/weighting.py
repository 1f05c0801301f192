"""The two ways of applying token weights to a chunk's hidden states that users know.

``comfy`` (ComfyUI): each token's state moves along the line from the empty prompt's state at the
same position to its own, ``z = empty + w * (z - empty)``; unweighted tokens stay exactly as they were.
``a1111`` (A1111's "original" emphasis): every state is multiplied by its token's weight, then the
whole chunk is rescaled so that its mean is what it was before.
"""

from __future__ import annotations

from typing import Literal

import torch

Weighting = Literal["comfy", "a1111"]
METHODS: tuple[str, ...] = ("comfy", "a1111")


def comfy(z: torch.Tensor, weights: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """``z`` (chunks, tokens, dim) interpolated towards or away from ``empty`` (1, tokens, dim) by
    ``weights`` (chunks, tokens); positions of weight 1 keep their exact values."""
    w = weights.to(z.dtype).unsqueeze(-1)
    moved = empty + w * (z - empty)
    return torch.where(w == 1.0, z, moved)


def a1111(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``z`` (chunks, tokens, dim) scaled by ``weights`` (chunks, tokens), each chunk's mean restored."""
    scaled = z * weights.to(z.dtype).unsqueeze(-1)
    original = z.mean(dim=(1, 2), keepdim=True)
    return scaled * (original / scaled.mean(dim=(1, 2), keepdim=True))


def apply(method: str, z: torch.Tensor, weights: torch.Tensor, empty: torch.Tensor | None) -> torch.Tensor:
    """``z`` weighted by ``method`` (``empty`` is needed by comfy); unchanged (the same tensor) when
    every weight is 1."""
    if bool((weights == 1.0).all()):
        return z
    if method == "comfy":
        if empty is None:
            raise ValueError("comfy weighting needs the empty prompt's states")
        return comfy(z, weights, empty)
    if method == "a1111":
        return a1111(z, weights)
    raise ValueError(f"unknown weighting {method!r} (one of {', '.join(METHODS)})")
