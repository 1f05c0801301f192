"""CustomSchedule: a Schedule that runs a Sigmas table with a chosen sampler (custom sampling)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.flow import table_config
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.scheduler import comfy_schedule
from sdflow.nodes.ops.flow_models import flow_table_sampler
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
        family = self.model.family
        if self.sampler.mode == "comfy" and not family.flow:  # SD3 / Flux: as diffusers mode
            return {"schedule": self._comfy_schedule(ctx)}
        if family.flow:
            return {"schedule": self._flow_schedule(ctx)}
        cls, config = scheduler_for(self.sampler.name, self.model.scheduler_config)
        try:
            fields = table_fields(cls, self.model.scheduler_config, self.sigmas.values)
        except ValueError as exc:
            raise ctx.error(f"sampler '{self.sampler.name}': {exc}", "sigmas") from None
        steps = len(self.sigmas.values) - 1
        schedule = Schedule(self.sampler.name, steps, cls, config, self.model.is_inpainting, **fields)
        return {"schedule": schedule}

    def _comfy_schedule(self, ctx: RunContext) -> Schedule:
        """Comfy mode: ComfyUI's sampler walks exactly these sigmas (SamplerCustom drops none)."""
        values = tuple(float(v) for v in self.sigmas.values)
        if len(values) < 2:
            raise ctx.error(f"these sigmas hold no step ({len(values)} value(s); denoise 0?)", "sigmas")
        schedule = comfy_schedule(self.model, self.sampler.name, "normal", 1, ctx)
        return replace(schedule, steps=len(values) - 1, comfy_sigmas=values)

    def _flow_schedule(self, ctx: RunContext) -> Schedule:
        """A flow model's Euler over the table as given (already shifted: the scheduler shifts by 1)."""
        flow_table_sampler(self.model, self.sampler.name, ctx)
        values = [float(v) for v in self.sigmas.values]
        if len(values) < 2 or values[-1] != 0.0 or not all(0.0 <= v <= 1.0 for v in values):
            raise ctx.error(
                f"{self.model.family} is flow-matching: its sigmas lie in [0, 1] and end in 0 "
                "(BasicScheduler simple, normal or sgm_uniform on this model), not these",
                "sigmas",
            )
        family = self.model.family
        config = table_config(self.model.scheduler_config)
        cls, config = scheduler_for(self.sampler.name, config, family=family)
        return Schedule(
            self.sampler.name, len(values) - 1, cls, config, sigmas=tuple(values[:-1]), family=family
        )
