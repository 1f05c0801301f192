"""BasicGuider: guide a custom sampler by one conditioning, without classifier-free guidance."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning, Model
from sdflow.nodes.types_sampling import Guider


class BasicGuider(Node):
    """Guide a custom sampler by one conditioning alone, without CFG (ComfyUI's BasicGuider).

    Each step is one UNet batch of the conditioning (Flux and distilled models)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"guider": Guider}
    same_family: ClassVar[tuple[str, ...]] = ("model", "conditioning")
    family_from: ClassVar[dict[str, str]] = {"guider": "model"}

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    conditioning: Conditioning = Field(description="what to draw")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"guider": Guider(self.model, self.conditioning)}
