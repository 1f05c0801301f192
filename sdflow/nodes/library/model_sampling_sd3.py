"""ModelSamplingSD3: a flow-matching model's schedule shift (ComfyUI's node; diffusers' ``shift``)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.flow_models import flow_model, shifted
from sdflow.nodes.types import Model


class ModelSamplingSD3(Node):
    """Shift a flow-matching model's noise schedule: sigma' = shift * s / (1 + (shift - 1) * s), for
    every Scheduler using it (diffusers' FlowMatchEulerDiscreteScheduler ``shift``; SD3: 3.0)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(
        description="an SD3 or Flux model; its weights are shared, only its schedule changes"
    )
    shift: float = Field(3.0, ge=0.0, le=100.0, description="the schedule shift (1 = none)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        flow_model(self, self.model, ctx)
        return {"model": shifted(self.model, self.shift)}
