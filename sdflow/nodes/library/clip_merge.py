"""CLIP merging as ComfyUI does it: CLIPMergeSimple, CLIPMergeAdd and CLIPMergeSubtract.

Each text encoder's weights become ``own * clip1 + other * clip2`` (SDXL: both encoders); position ids
and the logit scale stay clip1's, as in ComfyUI.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.merge import MergeMismatch, merged_copy
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Clip

KEPT = (".position_ids", ".logit_scale")


class _ClipMerge(Node):
    """Two CLIPs of one architecture in, one merged CLIP out (clip1's tokenizers)."""

    abstract: ClassVar[bool] = True
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"clip": Clip}
    cache: ClassVar[str] = "model"
    family_from: ClassVar[dict[str, str]] = {"clip": "clip1"}
    same_family: ClassVar[tuple[str, ...]] = ("clip1", "clip2")

    clip1: Clip = Field(description="the first text encoders (their tokenizers are kept); left unchanged")
    clip2: Clip = Field(description="the second text encoders, of the same architecture; left unchanged")

    def shares(self) -> tuple[float, float]:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> dict[str, Any]:
        own, other = self.shares()

        def factors(name: str) -> tuple[float, float] | None:
            return None if name.endswith(KEPT) else (own, other)

        merged: dict[str, Any] = {}
        for attribute in ("text_encoder", "text_encoder_2"):
            first, second = getattr(self.clip1, attribute), getattr(self.clip2, attribute)
            if first is None:
                continue
            if second is None:
                raise ctx.error(
                    f"clip2 has no {attribute.replace('_', ' ')}: not the same architecture", "clip2"
                )
            try:
                merged[attribute] = merged_copy(first, second, factors)
            except MergeMismatch as exc:
                raise ctx.error(str(exc), "clip2") from None
        return {"clip": replace(self.clip1, **merged)}


class CLIPMergeSimple(_ClipMerge):
    """Blend two CLIPs: ratio × clip1 + (1 − ratio) × clip2, weight by weight."""

    ratio: float = Field(1.0, ge=0.0, le=1.0, description="share of clip1: 1 = clip1 alone, 0 = clip2 alone")

    def shares(self) -> tuple[float, float]:
        return self.ratio, 1.0 - self.ratio


class CLIPMergeAdd(_ClipMerge):
    """Add clip2's weights to clip1's (usually clip2 is a difference)."""

    def shares(self) -> tuple[float, float]:
        return 1.0, 1.0


class CLIPMergeSubtract(_ClipMerge):
    """The difference of two CLIPs: multiplier × (clip1 − clip2)."""

    multiplier: float = Field(1.0, ge=-10.0, le=10.0, description="scale of the difference")

    def shares(self) -> tuple[float, float]:
        return self.multiplier, -self.multiplier
