"""ModelSamplingDiscrete: tell the schedulers what a model predicts (ComfyUI's node of that name)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Model

# ComfyUI's sampling names -> diffusers' prediction_type
PREDICTIONS = {"eps": "epsilon", "v_prediction": "v_prediction", "lcm": "epsilon", "x0": "sample"}


class ModelSamplingDiscrete(Node):
    """Override the model's prediction type (eps, v_prediction, x0; lcm = eps for LCM models) and
    optionally rescale its noise schedule to zero terminal SNR (zsnr), for every Scheduler using it."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="the model; its weights are shared, only its scheduler settings change")
    sampling: Literal["eps", "v_prediction", "lcm", "x0"] = Field(
        "eps",
        description="what the model predicts: eps (noise), v_prediction, x0 (the clean latent); lcm = eps",
    )
    zsnr: bool = Field(
        False, description="rescale the betas to zero terminal SNR (diffusers' rescale_betas_zero_snr)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.model.family.flow:
            message = (
                f"{self.model.family} is flow-matching: shift its schedule with ModelSamplingSD3 "
                "or ModelSamplingFlux"
            )
            raise ctx.error(message, "model")
        config = {**self.model.scheduler_config, "prediction_type": PREDICTIONS[self.sampling]}
        if self.zsnr:
            config["rescale_betas_zero_snr"] = True
        return {"model": replace(self.model, scheduler_config=config)}
