"""Changing a flow-matching model's schedule shift (ModelSamplingSD3, ModelSamplingFlux)."""

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
