"""BasicScheduler: a model's sigma table for one of ComfyUI's schedules, steps and denoise."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops.sigma_schedules import denoised_sigmas, flow_denoised
from sdflow.nodes.types import Model
from sdflow.nodes.types_sampling import Sigmas

ScheduleName = Literal[
    "normal",
    "karras",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
]


class BasicScheduler(Node):
    """ComfyUI's BasicScheduler: the sigmas of ``scheduler`` on the model's training schedule; below
    denoise 1, the last steps + 1 of a steps / denoise schedule (none at 0). On SD3 / Flux: simple,
    normal and sgm_uniform, with the model's shift."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"sigmas": Sigmas}

    model: Model = Field(description="the model whose training noise schedule to use")
    scheduler: ScheduleName = Field("normal", description="the schedule, by ComfyUI's name")
    steps: int = Field(20, ge=1, le=MAX_STEPS, description="steps the sigmas take")
    denoise: float = Field(1.0, ge=0.0, le=1.0, description="the share of the schedule to run (img2img)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            if self.model.family.flow:
                values = flow_denoised(self.model.scheduler_config, self.scheduler, self.steps, self.denoise)
            else:
                values = denoised_sigmas(
                    self.model.scheduler_config, self.scheduler, self.steps, self.denoise
                )
        except ValueError as exc:
            raise ctx.error(str(exc), "model") from None
        return {"sigmas": Sigmas(values)}
