"""Comfy mode's tables: which samplers it runs (sdflow's names -> ComfyUI's), the sigma table ComfyUI's
KSampler walks, and how the starting noise is scaled (ComfyUI's max_denoise). The samplers themselves
are in ``comfy_sampling``."""

from __future__ import annotations

import math
from typing import Any

import torch

from sdflow.nodes.ops.sigma_schedules import calculate_sigmas

# sdflow's sampler name -> ComfyUI's, for the samplers comfy mode runs.
COMFY_NAMES = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "heun": "heun",
    "dpmpp_2m": "dpmpp_2m",
    "dpmpp_sde": "dpmpp_sde",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_3m_sde": "dpmpp_3m_sde",
    "lcm": "lcm",
    "ddim": "ddim",
    "unipc": "uni_pc",
    "uni_pc_bh2": "uni_pc_bh2",
    "dpm_2": "dpm_2",
    "dpm_2_ancestral": "dpm_2_ancestral",
    "lms": "lms",
    "ddpm": "ddpm",
}
# KSampler computes one step more for these and drops the next-to-last sigma.
DROPS_PENULTIMATE = ("unipc", "uni_pc_bh2", "dpm_2", "dpm_2_ancestral")
MAX_DENOISE_TOLERANCE = 1e-5


def comfy_problem(sampler: str) -> str | None:
    """Why comfy mode cannot run ``sampler`` (None: it can)."""
    if sampler in COMFY_NAMES:
        return None
    runs = ", ".join(COMFY_NAMES)
    return f"sampler '{sampler}' has no comfy mode: comfy mode runs {runs} (or use mode diffusers)"


def ksampler_sigmas(
    scheduler_config: dict[str, Any], sampler: str, schedule: str, steps: int
) -> torch.Tensor:
    """The full table ComfyUI's KSampler walks for ``steps`` steps of ``schedule`` with ``sampler``."""
    name = "normal" if schedule == "default" else schedule
    if sampler in DROPS_PENULTIMATE:
        table = calculate_sigmas(scheduler_config, name, steps + 1)
        return torch.cat([table[:-2], table[-1:]])
    return calculate_sigmas(scheduler_config, name, steps)


def starts_at_full_noise(first_sigma: float, sigma_max: float) -> bool:
    """ComfyUI's max_denoise: the table starts at (or above) the model's largest training sigma."""
    return math.isclose(sigma_max, first_sigma, rel_tol=MAX_DENOISE_TOLERANCE) or first_sigma > sigma_max


def noise_scale(first_sigma: float, sigma_max: float) -> float:
    """What the starting noise is multiplied by: sqrt(1 + sigma^2) from full noise, else sigma."""
    sigma = torch.tensor(first_sigma, dtype=torch.float32)
    if starts_at_full_noise(first_sigma, sigma_max):
        return float(torch.sqrt(1.0 + sigma**2.0))
    return float(sigma)
