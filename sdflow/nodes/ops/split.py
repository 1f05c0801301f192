"""Split denoising: where a DenoiseLoop stops (``end_at``) and an AddNoise resumes (``start_at``).

Each is one field holding a step (an int, ComfyUI's end_at_step / start_at_step) or a fraction of the
schedule (a float, diffusers' denoising_end / denoising_start). The older names stay as documented
aliases: ``end_step`` and ``start_step`` (steps), ``denoise_end`` and ``denoise_start`` (fractions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops.schedule_window import start_at
from sdflow.nodes.types import Cut

# A step (int) or a fraction of the schedule (float); which one is told by the number's type.
EndPoint = Annotated[int, Field(ge=1, le=MAX_STEPS)] | Annotated[float, Field(gt=0.0, le=1.0)]
StartPoint = Annotated[int, Field(ge=0, le=MAX_STEPS)] | Annotated[float, Field(ge=0.0, lt=1.0)]

END_ALIASES = ("end_step", "denoise_end")
START_ALIASES = ("start_step", "denoise_start")
_UNSET = {"denoise_end": 1.0}  # an alias at this value is not given (denoise_end's default: to the end)


def _given(values: Mapping[str, Any], name: str) -> bool:
    value = values.get(name)
    return value is not None and value != _UNSET.get(name, object())


def chosen(values: Mapping[str, Any], field: str, aliases: tuple[str, ...]) -> tuple[int | float | None, str]:
    """The point the user wrote and the name they wrote it under; a fraction stays a float, a step an int."""
    for name in (field, *aliases):
        if _given(values, name):
            value = values[name]
            if name.startswith("denoise_"):
                value = float(value)
            if isinstance(value, float) and name == field and value == 1.0:
                return None, field  # end_at: 1.0 = the whole schedule
            return value, name
    return None, field


def conflicts(values: Mapping[str, Any], field: str, aliases: tuple[str, ...]) -> list[tuple[str, str]]:
    """A precheck problem when more than one name of the same point is given."""
    given = [name for name in (field, *aliases) if _given(values, name)]
    if len(given) > 1:
        return [(given[1], f"give one of {', '.join(given)}: they name the same point ({field})")]
    return []


def resume_index(cut: Cut, scheduler: Any) -> int:
    """The timestep index of ``scheduler`` at which a latent cut at ``cut`` goes on."""
    if cut.fraction is not None:
        return start_at(scheduler, cut.fraction)
    return cut.index * scheduler.order


def describe(cut: Cut) -> str:
    """'at 0.8 of a schedule (a fraction)' / 'after step 10' for messages."""
    return f"at {cut.fraction:g} of a schedule" if cut.fraction is not None else f"after step {cut.index}"
