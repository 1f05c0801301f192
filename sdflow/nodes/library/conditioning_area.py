"""ComfyUI's conditioning nodes for composition and prompt scheduling: ConditioningCombine,
ConditioningSetArea, ConditioningSetAreaPercentage, ConditioningSetAreaStrength, ConditioningSetMask
and ConditioningSetTimestepRange. DenoiseLoop predicts each combined piece separately on its area and
blends the predictions as ComfyUI does (``nodes/ops/regions.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import VAE_SCALE, Conditioning, Mask, Region

MAX_SIZE = 16384


def each(conditioning: Conditioning, change: Callable[[Conditioning], Conditioning]) -> Conditioning:
    """``change`` applied to every piece of a (combined) conditioning."""
    if not conditioning.parts:
        return change(conditioning)
    parts = tuple(change(piece) for piece in conditioning.parts)
    return replace(parts[0], parts=parts)


def with_region(conditioning: Conditioning, **fields: Any) -> Conditioning:
    """Every piece with these region settings (the others it had are kept)."""
    return each(
        conditioning, lambda piece: replace(piece, region=replace(piece.region or Region(), **fields))
    )


class _OneConditioning(Node):
    abstract: ClassVar[bool] = True
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning"}

    conditioning: Conditioning = Field(
        description="the conditioning to change (every piece of a combination)"
    )


class ConditioningCombine(Node):
    """Use both conditionings: DenoiseLoop predicts each separately and averages the predictions
    (weighted by their areas and strengths), as ComfyUI does — unlike ConditioningConcat's one prompt."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning_1"}
    same_family: ClassVar[tuple[str, ...]] = ("conditioning_1", "conditioning_2")

    conditioning_1: Conditioning = Field(description="the first conditioning")
    conditioning_2: Conditioning = Field(description="the second conditioning")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        parts = self.conditioning_1.pieces + self.conditioning_2.pieces
        return {"conditioning": replace(parts[0], parts=parts)}


class ConditioningSetArea(_OneConditioning):
    """Let the conditioning act on one rectangle of the picture (pixels), its edges feathered."""

    width: int = Field(64, ge=VAE_SCALE, le=MAX_SIZE, multiple_of=VAE_SCALE, description="area width, pixels")
    height: int = Field(
        64, ge=VAE_SCALE, le=MAX_SIZE, multiple_of=VAE_SCALE, description="area height, pixels"
    )
    x: int = Field(0, ge=0, le=MAX_SIZE, multiple_of=VAE_SCALE, description="left edge, pixels")
    y: int = Field(0, ge=0, le=MAX_SIZE, multiple_of=VAE_SCALE, description="top edge, pixels")
    strength: float = Field(1.0, ge=0.0, le=10.0, description="weight against other conditionings there")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        area = (float(self.x), float(self.y), float(self.width), float(self.height))
        changed = with_region(
            self.conditioning, area=area, percent=False, strength=self.strength, mask_bounds=False
        )
        return {"conditioning": changed}


class ConditioningSetAreaPercentage(_OneConditioning):
    """Let the conditioning act on one rectangle given as fractions of the picture."""

    width: float = Field(1.0, ge=0.0, le=1.0, description="area width, fraction of the picture's")
    height: float = Field(1.0, ge=0.0, le=1.0, description="area height, fraction of the picture's")
    x: float = Field(0.0, ge=0.0, le=1.0, description="left edge, fraction of the width")
    y: float = Field(0.0, ge=0.0, le=1.0, description="top edge, fraction of the height")
    strength: float = Field(1.0, ge=0.0, le=10.0, description="weight against other conditionings there")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        area = (self.x, self.y, self.width, self.height)
        changed = with_region(
            self.conditioning, area=area, percent=True, strength=self.strength, mask_bounds=False
        )
        return {"conditioning": changed}


class ConditioningSetAreaStrength(_OneConditioning):
    """Set the weight of the conditioning against the others it is combined with."""

    strength: float = Field(1.0, ge=0.0, le=10.0, description="weight against other conditionings")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"conditioning": with_region(self.conditioning, strength=self.strength)}


class ConditioningSetMask(_OneConditioning):
    """Let the conditioning act where a mask is white (weighted by it)."""

    mask: Mask = Field(description="where the conditioning acts (resized to the latent)")
    strength: float = Field(1.0, ge=0.0, le=10.0, description="scale of the mask's weight")
    set_cond_area: Literal["default", "mask bounds"] = Field(
        "default",
        description="'mask bounds': evaluate only the mask's bounding box (faster, ComfyUI's option)",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        changed = with_region(
            self.conditioning,
            area=None,
            mask=self.mask.values,
            mask_strength=self.strength,
            mask_bounds=self.set_cond_area == "mask bounds",
        )
        return {"conditioning": changed}


class ConditioningSetTimestepRange(_OneConditioning):
    """Let the conditioning act only between two fractions of the schedule (0 = its first step): e.g.
    combine one prompt for 0-0.5 with another for 0.5-1 to switch prompts halfway."""

    start: float = Field(0.0, ge=0.0, le=1.0, description="fraction of the schedule where it starts acting")
    end: float = Field(1.0, ge=0.0, le=1.0, description="fraction of the schedule where it stops")

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        start, end = constants.get("start", 0.0), constants.get("end", 1.0)
        return [("start", f"start {start} is after end {end}")] if start > end else []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"conditioning": with_region(self.conditioning, start=self.start, end=self.end)}
