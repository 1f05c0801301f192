"""ApplyControlNet: attach a ControlNet (or T2I-Adapter) and its picture to a conditioning pair."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.schedule_window import window_precheck, window_problem
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Conditioning, ControlEntry, ControlNet, Image

MAX_STRENGTH = 10.0  # ComfyUI's bound


class ApplyControlNet(Node):
    """Steer the drawing with a control picture: the control travels with both conditionings.

    As ComfyUI's ControlNetApplyAdvanced: several ApplyControlNet nodes chain (their residuals are
    summed, as diffusers' MultiControlNetModel does), and DenoiseLoop applies them in its CFG batch."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"positive": Conditioning, "negative": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"positive": "positive", "negative": "negative"}
    same_family: ClassVar[tuple[str, ...]] = ("positive", "negative", "control_net")

    positive: Conditioning = Field(description="the conditioning of what to draw")
    negative: Conditioning = Field(description="the negative conditioning (the control acts on both halves)")
    control_net: ControlNet = Field(description="from LoadControlNet: a ControlNet or T2I-Adapter")
    image: Image = Field(
        description="the control picture (an edge map from Canny...), resized as diffusers does"
    )
    strength: float = Field(
        1.0, ge=0.0, le=MAX_STRENGTH, description="scale of the control's residuals (0 = no control at all)"
    )
    start_percent: float = Field(
        0.0, ge=0.0, le=1.0, description="fraction of the steps where the control starts"
    )
    end_percent: float = Field(
        1.0, ge=0.0, le=1.0, description="fraction of the steps where the control ends"
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return window_precheck(constants)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        control = self.control_net
        family = self.positive.family
        if (control.family is not None and control.family != family) or (
            control.family is None and family.pooled
        ):
            what = control.family.label if control.family else "SD 1.x/2.x"
            raise ctx.error(
                f"this is a {what} {control.kind.replace('_', '-')} but the conditioning is {family}: load a "
                "control made for the checkpoint's family",
                "control_net",
            )
        problem = window_problem(self.start_percent, self.end_percent)
        if problem:
            raise ctx.error(problem, "start_percent")
        if self.strength == 0:  # no control at all: the picture is exactly the uncontrolled one
            return {"positive": self.positive, "negative": self.negative}
        entry = ControlEntry(control, self.image.pixels, self.strength, self.start_percent, self.end_percent)
        return {
            "positive": replace(self.positive, controls=(*self.positive.controls, entry)),
            "negative": replace(self.negative, controls=(*self.negative.controls, entry)),
        }
