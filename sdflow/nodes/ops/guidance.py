"""Guidance: which conditionings a denoising step predicts (in UNet batch order, positive last) and
how their predictions combine into one: classifier-free guidance, or ComfyUI's DualCFGGuider."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdflow.nodes.types import Conditioning
from sdflow.nodes.types_sampling import Guider


@dataclass(frozen=True)
class Guidance:
    """``sides`` [(conditioning, is_negative)...] in batch order, the positive last; ``combine`` turns
    their predictions (same order) into the step's. One side is the positive alone, unguided."""

    sides: tuple[tuple[Conditioning, bool], ...]
    combine: Callable[[list[torch.Tensor]], torch.Tensor]

    @property
    def guiding(self) -> bool:
        return len(self.sides) > 1

    @property
    def positive(self) -> Conditioning:
        return self.sides[-1][0]


def _alone(predictions: list[torch.Tensor]) -> torch.Tensor:
    return predictions[-1]


def cfg(positive: Conditioning, negative: Conditioning, scale: float, comfy: bool = False) -> Guidance:
    """Classifier-free guidance; at scale <= 1 the positive alone (one UNet batch, as diffusers), in
    comfy mode only at scale 1 (ComfyUI guides below 1 too)."""
    if math.isclose(scale, 1.0) if comfy else scale <= 1.0:
        return Guidance(((positive, False),), _alone)

    def combine(predictions: list[torch.Tensor]) -> torch.Tensor:
        uncond, cond = predictions
        return uncond + scale * (cond - uncond)

    return Guidance(((negative, True), (positive, False)), combine)


def dual(guider: Guider) -> Guidance:
    """ComfyUI's DualCFGGuider. Regular: negative + cfg_negative * (middle - negative) + cfg *
    (positive - middle), the negative (and then the middle) left out at scale 1 as ComfyUI does.
    Nested: the positive guided from the middle by cfg, then that from the negative by cfg_negative."""
    negative, middle, positive = guider.negative, guider.middle, guider.positive
    assert negative is not None and middle is not None
    cfg1, cfg2 = guider.cfg, guider.cfg_negative
    if guider.nested:

        def nested(predictions: list[torch.Tensor]) -> torch.Tensor:
            uncond, mid, cond = predictions
            text = mid + cfg1 * (cond - mid)
            return uncond + cfg2 * (text - uncond)

        return Guidance(((negative, True), (middle, False), (positive, False)), nested)
    if math.isclose(cfg2, 1.0):
        if math.isclose(cfg1, 1.0):
            return Guidance(((positive, False),), _alone)

        def steered(predictions: list[torch.Tensor]) -> torch.Tensor:
            mid, cond = predictions
            return mid + (cond - mid) * cfg1

        return Guidance(((middle, False), (positive, False)), steered)

    def regular(predictions: list[torch.Tensor]) -> torch.Tensor:
        uncond, mid, cond = predictions
        return uncond + (mid - uncond) * cfg2 + (cond - mid) * cfg1

    return Guidance(((negative, True), (middle, False), (positive, False)), regular)


def of(guider: Guider, comfy: bool = False) -> Guidance:
    """The guidance a Guider port stands for (``comfy``: as comfy mode guides, see cfg)."""
    if guider.middle is not None:
        return dual(guider)
    if guider.negative is None:
        return Guidance(((guider.positive, False),), _alone)
    return cfg(guider.positive, guider.negative, guider.cfg, comfy=comfy)
