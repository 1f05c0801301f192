"""ModelSamplingFlux: Flux's resolution-dependent schedule shift (ComfyUI's node)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.flow import PATCH, calculate_shift
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.flow_models import flow_model, shifted
from sdflow.nodes.types import VAE_SCALE, Model


class ModelSamplingFlux(Node):
    """Shift a flow-matching schedule by resolution: mu runs linearly from base_shift at 256 patches to
    max_shift at 4096 (diffusers' calculate_shift). With width and height, mu is that picture's and the
    shift is fixed (exp(mu), as ComfyUI computes it); without, each picture's own size sets it (diffusers'
    use_dynamic_shifting)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="a Flux (or SD3) model; only its schedule changes")
    max_shift: float = Field(1.15, ge=0.0, le=100.0, description="mu at 4096 patches (1024x1024)")
    base_shift: float = Field(0.5, ge=0.0, le=100.0, description="mu at 256 patches (256x256)")
    width: int | None = Field(
        None, ge=16, le=16384, description="picture width the shift is for; null = each picture's own"
    )
    height: int | None = Field(
        None, ge=16, le=16384, description="picture height the shift is for; null = each picture's own"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        flow_model(self, self.model, ctx)
        config = {
            **self.model.scheduler_config,
            "max_shift": self.max_shift,
            "base_shift": self.base_shift,
            "base_image_seq_len": 256,
            "max_image_seq_len": 4096,
        }
        if (self.width is None) != (self.height is None):
            raise ctx.error(
                "give width and height together (or neither)", "width" if self.width is None else "height"
            )
        if self.width is None or self.height is None:
            config["use_dynamic_shifting"] = True
            return {"model": replace(self.model, scheduler_config=config)}
        cell = VAE_SCALE * PATCH
        mu = calculate_shift((self.height // cell) * (self.width // cell), config)
        return {"model": shifted(replace(self.model, scheduler_config=config), math.exp(mu))}
