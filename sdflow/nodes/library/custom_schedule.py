"""CustomSchedule: a Schedule that runs a Sigmas table with a chosen sampler (custom sampling)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.flow_models import no_sigma_tables
from sdflow.nodes.ops.samplers import scheduler_for
from sdflow.nodes.ops.sigma_schedules import table_fields
from sdflow.nodes.types import Model, Schedule
from sdflow.nodes.types_sampling import Sampler, Sigmas


class CustomSchedule(Node):
    """ComfyUI's SamplerCustom in sdflow's form: the sampler from KSamplerSelect runs exactly these
    sigmas; AddNoise and DenoiseLoop follow the schedule as they follow Scheduler's."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"schedule": Schedule}

    model: Model = Field(description="the model whose training config the sampler starts from")
    sampler: Sampler = Field(description="the sampling algorithm, from KSamplerSelect")
    sigmas: Sigmas = Field(description="the sigma table, from BasicScheduler, SplitSigmas, ...")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        no_sigma_tables(self.model, ctx)
        cls, config = scheduler_for(self.sampler.name, self.model.scheduler_config)
        try:
            fields = table_fields(cls, self.model.scheduler_config, self.sigmas.values)
        except ValueError as exc:
            raise ctx.error(f"sampler '{self.sampler.name}': {exc}", "sigmas") from None
        steps = len(self.sigmas.values) - 1
        schedule = Schedule(self.sampler.name, steps, cls, config, self.model.is_inpainting, **fields)
        return {"schedule": schedule}
