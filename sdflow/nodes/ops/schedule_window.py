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
