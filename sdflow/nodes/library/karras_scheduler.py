"""KarrasScheduler: Karras et al.'s sigma spacing between two noise levels."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops.sigma_schedules import karras
from sdflow.nodes.types_sampling import Sigmas

SD_SIGMA_MAX, SD_SIGMA_MIN = 14.614642, 0.0291675  # ComfyUI's defaults: SD's training range


class KarrasScheduler(Node):
    """ComfyUI's KarrasScheduler: steps sigmas from sigma_max to sigma_min, spaced by rho, then 0."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"sigmas": Sigmas}

    steps: int = Field(20, ge=1, le=MAX_STEPS, description="steps the sigmas take")
    sigma_max: float = Field(SD_SIGMA_MAX, gt=0.0, le=5000.0, description="the first (highest) sigma")
    sigma_min: float = Field(SD_SIGMA_MIN, gt=0.0, le=5000.0, description="the last sigma before 0")
    rho: float = Field(7.0, gt=0.0, le=100.0, description="spacing: higher crowds steps near sigma_min")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"sigmas": Sigmas(karras(self.steps, self.sigma_min, self.sigma_max, self.rho))}
