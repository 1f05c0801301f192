"""FluxGuidance: the distilled guidance value a Flux-dev transformer reads (ComfyUI's node)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning


class FluxGuidance(Node):
    """Set the guidance a guidance-distilled model (Flux-dev) is given with this conditioning, in place
    of CFG (keep DenoiseLoop's cfg at 1); diffusers' FluxPipeline guidance_scale."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning"}

    conditioning: Conditioning = Field(description="conditioning from a Flux clip")
    guidance: float = Field(3.5, ge=0.0, le=100.0, description="the distilled guidance (Flux-dev: 3.5)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        given = self.conditioning
        if given.family.default_guidance is None:
            raise ctx.error(
                f"this conditioning is {given.family}'s, whose model reads no distilled guidance: "
                "FluxGuidance is for Flux (guidance-distilled) models; use DenoiseLoop's cfg",
                "conditioning",
            )
        parts = tuple(replace(part, guidance=self.guidance) for part in given.parts)
        return {"conditioning": replace(given, guidance=self.guidance, parts=parts)}
