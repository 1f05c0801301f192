"""Sampler names -> diffusers scheduler classes and the settings that make each one; Karras sigmas."""

from __future__ import annotations

import inspect
from typing import Any, Literal

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

SamplerName = Literal[
    "ddim",
    "ddpm",
    "pndm",
    "lms",
    "euler",
    "euler_ancestral",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "unipc",
]

# How the steps are spaced: the scheduler's own spacing, or Karras et al.'s (ComfyUI's `karras`
# scheduler); diffusers' `use_karras_sigmas`, which only some schedulers have.
SigmasName = Literal["default", "karras"]
KARRAS = "use_karras_sigmas"

_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

SAMPLERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    # PLMS, as Stable Diffusion ships it: the Runge-Kutta warm-up of a plain PNDMScheduler needs
    # at least 4 steps and crashes below that (and checkpoints whose config is DDIM's lack the flag).
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),
    "lms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, _DPMPP_2M),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**_DPMPP_2M, KARRAS: True}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def supports_karras(sampler: str) -> bool:
    """Whether ``sampler``'s diffusers scheduler can space its steps with Karras sigmas."""
    cls = SAMPLERS[sampler][0]
    return KARRAS in inspect.signature(cls.__init__).parameters


def karras_samplers() -> list[str]:
    """The samplers that take ``sigmas: karras`` (the alias dpmpp_2m_karras, always on it, left out)."""
    return [
        name for name, (_, settings) in SAMPLERS.items() if supports_karras(name) and KARRAS not in settings
    ]


def scheduler_for(
    sampler: str, base_config: dict[str, Any], sigmas: str = "default"
) -> tuple[type, dict[str, Any]]:
    """The scheduler class and full config for ``sampler`` on a checkpoint's scheduler config, with
    Karras sigmas when ``sigmas`` is "karras" (ValueError for a sampler that has none)."""
    cls, overrides = SAMPLERS[sampler]
    if sigmas == "karras":
        if not supports_karras(sampler):
            raise ValueError(f"sampler '{sampler}' has no Karras sigmas")
        overrides = {**overrides, KARRAS: True}
    return cls, {**dict(base_config), **overrides}
