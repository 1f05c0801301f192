"""KSamplerSelect: a sampler by name, for CustomSchedule (ComfyUI's custom sampling)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.scheduler import SamplingMode
from sdflow.nodes.ops.comfy_tables import comfy_problem
from sdflow.nodes.ops.samplers import SAMPLERS, SamplerName, unavailable
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types_sampling import Sampler


class KSamplerSelect(Node):
    """ComfyUI's KSamplerSelect: choose the sampling algorithm that runs a Sigmas table."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"sampler": Sampler}

    sampler_name: SamplerName = Field("euler", description="sampling algorithm (Scheduler's sampler names)")
    mode: SamplingMode = Field(
        "diffusers",
        description="diffusers' scheduler runs the sigmas, or comfy: as ComfyUI (Scheduler's mode)",
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        name = constants.get("sampler_name", "euler")
        if constants.get("mode") == "comfy":
            problem = comfy_problem(name) if isinstance(name, str) else None
            return [("sampler_name", problem)] if problem else []
        if isinstance(name, str) and name not in SAMPLERS:
            return [("sampler_name", unavailable(name))]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.mode == "comfy":
            problem = comfy_problem(self.sampler_name)
            if problem:
                raise ctx.error(problem, "sampler_name")
            return {"sampler": Sampler(self.sampler_name, "comfy")}
        if self.sampler_name not in SAMPLERS:
            raise ctx.error(unavailable(self.sampler_name), "sampler_name")
        return {"sampler": Sampler(self.sampler_name)}
