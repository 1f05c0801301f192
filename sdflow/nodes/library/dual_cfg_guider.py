"""DualCFGGuider: guide a custom sampler by two conditionings and a negative (ComfyUI's node)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning, Model
from sdflow.nodes.types_sampling import Guider


class DualCFGGuider(Node):
    """Guide a custom sampler by two conditionings and a negative (ComfyUI's DualCFGGuider).

    negative + cfg_cond2_negative * (cond2 - negative) + cfg_conds * (cond1 - cond2) per step, the
    three in one UNet batch (nested: cond1 guided from cond2 first, that from negative by
    cfg_cond2_negative)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"guider": Guider}
    same_family: ClassVar[tuple[str, ...]] = ("model", "cond1", "cond2", "negative")
    family_from: ClassVar[dict[str, str]] = {"guider": "model"}

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    cond1: Conditioning = Field(description="the conditioning steered towards, from cond2")
    cond2: Conditioning = Field(description="the middle conditioning, steered towards from negative")
    negative: Conditioning = Field(description="what to steer away from")
    cfg_conds: float = Field(8.0, ge=0.0, le=100.0, description="scale of cond1 against cond2")
    cfg_cond2_negative: float = Field(8.0, ge=0.0, le=100.0, description="scale of cond2 against negative")
    style: Literal["regular", "nested"] = Field("regular", description="ComfyUI's combination style")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        guider = Guider(
            self.model,
            self.cond1,
            negative=self.negative,
            cfg=self.cfg_conds,
            middle=self.cond2,
            cfg_negative=self.cfg_cond2_negative,
            nested=self.style == "nested",
        )
        return {"guider": guider}
