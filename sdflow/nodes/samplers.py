"""Sampler names -> diffusers scheduler classes and the settings that make each one."""

from __future__ import annotations

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
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**_DPMPP_2M, "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
}


def scheduler_for(sampler: str, base_config: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The scheduler class and full config for ``sampler`` on a checkpoint's scheduler config."""
    cls, overrides = SAMPLERS[sampler]
    return cls, {**dict(base_config), **overrides}
