"""Bislerp: resize latents by spherical interpolation of each cell's channel vector, first along the
width, then along the height (ComfyUI's ``bislerp`` upscale method, same sample positions as bilinear
with aligned corners off). Magnitudes are interpolated linearly, directions on the sphere."""

from __future__ import annotations

import torch
import torch.nn.functional as F

PARALLEL = 1e-5  # |cos| this close to 1: the two directions are treated as equal (or opposite)


def slerp(first: torch.Tensor, second: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Rows of ``first`` and ``second`` (N, C) slerped by ``ratio`` (N, 1); lengths lerped."""
    first_norm = first.norm(dim=-1, keepdim=True)
    second_norm = second.norm(dim=-1, keepdim=True)
    first_unit = torch.where(first_norm == 0, 0.0, first / first_norm)
    second_unit = torch.where(second_norm == 0, 0.0, second / second_norm)
    cos = (first_unit * second_unit).sum(-1)
    angle = torch.acos(cos)
    sine = torch.sin(angle)
    r = ratio.squeeze(1)
    direction = (torch.sin((1.0 - r) * angle) / sine).unsqueeze(1) * first_unit
    direction = direction + (torch.sin(r * angle) / sine).unsqueeze(1) * second_unit
    result = direction * (first_norm * (1.0 - ratio) + second_norm * ratio)
    same = (cos > 1 - PARALLEL).unsqueeze(1)
    opposite = (cos < PARALLEL - 1).unsqueeze(1)
    result = torch.where(same, first, result)
    return torch.where(opposite, first * (1.0 - ratio) + second * ratio, result)


def _positions(old: int, new: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each new index: the fraction past the left neighbour, the left and the right old index,
    at the positions bilinear resizing samples."""
    ramp = torch.arange(old, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    left = F.interpolate(ramp, size=(1, new), mode="bilinear")
    fraction = left - left.floor()
    shifted = ramp + 1
    shifted[..., -1] -= 1  # the last cell has no right neighbour
    right = F.interpolate(shifted, size=(1, new), mode="bilinear")
    return fraction.flatten(), left.flatten().long(), right.flatten().long()


def _along_last(samples: torch.Tensor, new: int) -> torch.Tensor:
    """``samples`` (N, C, H, W) resized to width ``new`` by slerp of neighbouring cells."""
    n, c, h, w = samples.shape
    fraction, left, right = _positions(w, new, samples.device)
    first = samples[..., left].movedim(1, -1).reshape(-1, c)
    second = samples[..., right].movedim(1, -1).reshape(-1, c)
    ratio = fraction.reshape(1, 1, new).expand(n, h, new).reshape(-1, 1)
    return slerp(first, second, ratio).reshape(n, h, new, c).movedim(-1, 1)


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``samples`` (N, C, H, W) resized to (height, width) by bislerp, computed in float32."""
    widened = _along_last(samples.float(), width)
    result = _along_last(widened.transpose(-1, -2), height).transpose(-1, -2)
    return result.to(samples.dtype)
