"""Model patches and flow-matching models: the shift of their schedule (ModelSamplingSD3,
ModelSamplingFlux), the refusals of UNet-only patches (ToMe, DeepCache), and which samplers run a
custom sigma table (BasicScheduler, CustomSchedule) for them."""

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


def flow_table_sampler(model: Model, sampler: str, ctx: RunContext) -> None:
    """Refuse a sampler that cannot run a sigma table on a flow-matching model (only flow Euler can)."""
    from sdflow.models.flow import FLOW_SCHEDULES

    if model.family.flow and sampler not in FLOW_SCHEDULES:
        raise ctx.error(
            f"{model.family} is flow-matching: a custom sigma table runs with sampler "
            f"{', '.join(FLOW_SCHEDULES)} only, not '{sampler}'",
            "sampler",
        )
