"""Model patches and flow-matching models: the shift of their schedule (ModelSamplingSD3,
ModelSamplingFlux), and the refusals of UNet-only patches (ToMe, DeepCache) and of custom sigma tables
(BasicScheduler, CustomSchedule) for them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sdflow.nodes.base import RunContext
from sdflow.nodes.types import Model


def flow_model(node: Any, model: Model, ctx: RunContext) -> None:
    """Refuse a model that is not flow-matching (its schedule has no shift)."""
    if not model.family.flow:
        raise ctx.error(
            f"{type(node).__name__} shifts a flow-matching schedule (SD3, Flux); this model is "
            f"{model.family}: use ModelSamplingDiscrete",
            "model",
        )


def shifted(model: Model, shift: float) -> Model:
    """``model`` with a fixed schedule shift (no shift by resolution)."""
    config = {**model.scheduler_config, "shift": float(shift), "use_dynamic_shifting": False}
    return replace(model, scheduler_config=config)


def unet_only(node: Any, model: Model, ctx: RunContext) -> None:
    """Refuse a patch that rewrites a UNet's blocks on a diffusion transformer (SD3, Flux)."""
    if model.family.denoiser_folder != "unet":
        raise ctx.error(
            f"{type(node).__name__} patches a UNet's blocks; this model is {model.family}, a diffusion "
            "transformer: leave it out",
            "model",
        )


def no_sigma_tables(model: Model, ctx: RunContext) -> None:
    """Refuse a custom sigma table for a flow-matching model (not supported yet)."""
    if model.family.flow:
        raise ctx.error(
            f"{model.family} is flow-matching: custom sigma tables are not supported for it yet; "
            "use a Scheduler node (sampler euler, heun or dpmpp_2m)",
            "model",
        )
