"""SplitSigmas: cut a sigma table at a step into the part before and the part after."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.types_sampling import Sigmas


class SplitSigmas(Node):
    """ComfyUI's SplitSigmas: high is sigmas[:step + 1], low is sigmas[step:] (they share sigma step)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"high": Sigmas, "low": Sigmas}

    sigmas: Sigmas = Field(description="the table to cut, from BasicScheduler or another scheduler node")
    step: int = Field(0, ge=0, le=MAX_STEPS, description="the step to cut at")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        values = self.sigmas.values
        return {"high": Sigmas(values[: self.step + 1]), "low": Sigmas(values[self.step :])}
