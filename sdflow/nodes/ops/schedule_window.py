"""Which part of a schedule a loop runs: from img2img strength, or between two fractions of it.

The fractions are diffusers' ``denoising_start`` / ``denoising_end`` (SDXL's base -> refiner hand-off):
a fraction f cuts the schedule at the training timestep round(T - f * T); the base runs the timesteps
at or above the cut, the refiner those below it.
"""

from __future__ import annotations

from typing import Any

import torch

from sdflow.models.families import SD15, Family


def start_index(steps: int, strength: float, order: int, family: Family = SD15) -> int:
    """Index of the first timestep to run, as the family's diffusers img2img computes it from
    ``strength``."""
    return family.skipped_steps(steps, strength) * order


def _cutoff(scheduler: Any, fraction: float) -> int:
    total = scheduler.config.num_train_timesteps
    return round(total - fraction * total)


def end_count(scheduler: Any, timesteps: torch.Tensor, fraction: float) -> int:
    """How many of ``timesteps`` to run to stop at ``fraction`` of the schedule (denoising_end)."""
    return int((timesteps >= _cutoff(scheduler, fraction)).sum().item())


def start_at(scheduler: Any, fraction: float) -> int:
    """Index of the first timestep to run when starting at ``fraction`` (denoising_start).

    A second-order scheduler repeats every timestep but the first: an even count would start between
    the two halves of a step, so diffusers runs one more."""
    count = int((scheduler.timesteps < _cutoff(scheduler, fraction)).sum().item())
    if scheduler.order == 2 and count % 2 == 0:
        count += 1
    return len(scheduler.timesteps) - count


def window_problem(start: object, end: object) -> str | None:
    """Why a start_percent..end_percent window is wrong (start past end), or None."""
    if isinstance(start, int | float) and isinstance(end, int | float) and start > end:
        return f"start_percent ({start}) must not exceed end_percent ({end})"
    return None


def window_precheck(constants: dict[str, Any]) -> list[tuple[str, str]]:
    """A node's start_percent/end_percent constants checked before anything runs."""
    problem = window_problem(constants.get("start_percent", 0.0), constants.get("end_percent", 1.0))
    return [("start_percent", problem)] if problem else []


def step_in_window(index: int, total: int, start: float, end: float) -> bool:
    """diffusers' controlnet_keep: on while step ``index`` of ``total`` lies inside [start, end]."""
    return not (index / total < start or (index + 1) / total > end)
