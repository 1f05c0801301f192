"""SDTurboScheduler: 1-10 steps down the timesteps 999, 899, ..., 99 (SD/SDXL Turbo)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.sigma_schedules import TURBO_TIMESTEPS, denoised_sigmas
from sdflow.nodes.types import Model
from sdflow.nodes.types_sampling import Sigmas


class SDTurboScheduler(Node):
    """ComfyUI's SDTurboScheduler: ``steps`` sigmas at timesteps 999, 899, ..., starting lower as
    denoise drops (denoise 0.5 starts at 499)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"sigmas": Sigmas}

    model: Model = Field(description="the model whose training noise schedule to use")
    steps: int = Field(1, ge=1, le=TURBO_TIMESTEPS, description="steps (Turbo models take 1-4)")
    denoise: float = Field(1.0, ge=0.0, le=1.0, description="the share of the ladder to run (img2img)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            values = denoised_sigmas(self.model.scheduler_config, "sd_turbo", self.steps, self.denoise)
        except ValueError as exc:
            raise ctx.error(str(exc), "model") from None
        return {"sigmas": Sigmas(values)}
