"""CFGGuider: guide a custom sampler by classifier-free guidance, as DenoiseLoop's cfg does."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning, Model
from sdflow.nodes.types_sampling import Guider


class CFGGuider(Node):
    """Guide a custom sampler by classifier-free guidance (ComfyUI's CFGGuider).

    negative + cfg * (positive - negative) at every step, both halves in one UNet batch; at cfg <= 1
    the positive alone, as DenoiseLoop."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"guider": Guider}
    same_family: ClassVar[tuple[str, ...]] = ("model", "positive", "negative")
    family_from: ClassVar[dict[str, str]] = {"guider": "model"}

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    positive: Conditioning = Field(description="what to draw")
    negative: Conditioning = Field(description="what to steer away from")
    cfg: float = Field(8.0, ge=0.0, le=100.0, description="guidance scale; <= 1 disables guidance")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"guider": Guider(self.model, self.positive, self.negative, self.cfg)}
