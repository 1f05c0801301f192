"""CustomSchedule: a Schedule that runs a Sigmas table with a chosen sampler (custom sampling)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.samplers import scheduler_for
from sdflow.nodes.ops.sigma_schedules import table_fields
from sdflow.nodes.types import Model, Sampler, Schedule, Sigmas


class CustomSchedule(Node):
    """ComfyUI's SamplerCustom in sdflow's form: the sampler from KSamplerSelect runs exactly these
    sigmas; AddNoise and DenoiseLoop follow the schedule as they follow Scheduler's."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"schedule": Schedule}

    model: Model = Field(description="the model whose training config the sampler starts from")
    sampler: Sampler = Field(description="the sampling algorithm, from KSamplerSelect")
    sigmas: Sigmas = Field(description="the sigma table, from BasicScheduler, SplitSigmas, ...")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.model.family.flow:
            message = (
                f"{self.model.family} is flow-matching: custom sigma tables are not supported for it yet; "
                "use a Scheduler node (sampler euler, heun or dpmpp_2m)"
            )
            raise ctx.error(message, "model")
        cls, config = scheduler_for(self.sampler.name, self.model.scheduler_config)
        try:
            fields = table_fields(cls, self.model.scheduler_config, self.sigmas.values)
        except ValueError as exc:
            raise ctx.error(f"sampler '{self.sampler.name}': {exc}", "sigmas") from None
        steps = len(self.sigmas.values) - 1
        schedule = Schedule(self.sampler.name, steps, cls, config, self.model.is_inpainting, **fields)
        return {"schedule": schedule}
