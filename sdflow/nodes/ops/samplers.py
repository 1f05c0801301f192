"""Sampler names -> diffusers scheduler classes and the settings that make each one; Karras sigmas."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from diffusers.utils import is_torchsde_available

from sdflow.models import flow
from sdflow.models.families import Family

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
    "uni_pc_bh2",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "dpmpp_sde",
    "dpmpp_2s",
    "dpm_2",
    "dpm_2_ancestral",
    "deis",
    "lcm",
    "tcd",
]

# How the steps are spaced: the scheduler's own spacing, or Karras et al.'s (ComfyUI's `karras`
# scheduler); diffusers' `use_karras_sigmas`, which only some schedulers have.
# The other names are ComfyUI's schedules, computed as ComfyUI does (sigma_schedules.py).
SigmasName = Literal[
    "default",
    "karras",
    "normal",
    "exponential",
    "sgm_uniform",
    "simple",
    "ddim_uniform",
    "beta",
    "linear_quadratic",
    "kl_optimal",
    "sd_turbo",
]
KARRAS = "use_karras_sigmas"

_DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}

_SAMPLER_CLASSES: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    # PLMS, as Stable Diffusion ships it: the Runge-Kutta warm-up of a plain PNDMScheduler needs
    # at least 4 steps and crashes below that (and checkpoints whose config is DDIM's lack the flag).
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", _DPMPP_2M),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {**_DPMPP_2M, KARRAS: True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "uni_pc_bh2": ("UniPCMultistepScheduler", {"solver_type": "bh2"}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "dpmpp_3m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
    "tcd": ("TCDScheduler", {}),
}
# DPMSolverSDEScheduler draws its noise from a torchsde Brownian tree (the optional `sde` extra); the
# tree's seed comes from the loop's generator (see stochastic_seed), so a seed reproduces the picture.
if is_torchsde_available():
    _SAMPLER_CLASSES["dpmpp_sde"] = ("DPMSolverSDEScheduler", {})


class _Samplers(Mapping[str, tuple[type, dict[str, Any]]]):
    """Sampler name -> (diffusers scheduler class, its settings). A scheduler's module is imported
    when its entry is read, not before: several import scipy, which most workflows never need."""

    def __getitem__(self, sampler: str) -> tuple[type, dict[str, Any]]:
        class_name, settings = _SAMPLER_CLASSES[sampler]
        import diffusers

        return getattr(diffusers, class_name), settings

    def __iter__(self) -> Iterator[str]:
        return iter(_SAMPLER_CLASSES)

    def __len__(self) -> int:
        return len(_SAMPLER_CLASSES)


SAMPLERS = _Samplers()


def unavailable(sampler: str) -> str:
    """Why a sampler name the Scheduler knows has no scheduler here (only dpmpp_sde: torchsde)."""
    return f"sampler '{sampler}' needs torchsde: pip install 'sdflow[sde]' (or torchsde)"


def supports_karras(sampler: str) -> bool:
    """Whether ``sampler``'s diffusers scheduler can space its steps with Karras sigmas."""
    if sampler not in SAMPLERS:  # dpmpp_sde without torchsde
        return False
    cls = SAMPLERS[sampler][0]
    return KARRAS in inspect.signature(cls.__init__).parameters


def karras_samplers() -> list[str]:
    """The samplers that take ``sigmas: karras`` (the alias dpmpp_2m_karras, always on it, left out)."""
    return [
        name for name, (_, settings) in SAMPLERS.items() if supports_karras(name) and KARRAS not in settings
    ]


class Refused(ValueError):
    """A sampler or sigmas choice the model cannot take; ``field`` is the Scheduler field to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def scheduler_for(
    sampler: str, base_config: dict[str, Any], sigmas: str = "default", family: Family | None = None
) -> tuple[type, dict[str, Any]]:
    """The scheduler class and full config for ``sampler`` on a checkpoint's scheduler config, with
    Karras sigmas when ``sigmas`` is "karras" (ValueError for a sampler that has none). A
    flow-matching ``family`` (SD3, Flux) takes the flow-matching samplers (``flow.FLOW_SAMPLERS``)
    with the checkpoint's shift, and its own sigmas only (Refused otherwise)."""
    if family is not None and family.flow:
        if sigmas not in ("default", *flow.FLOW_SCHEDULES.get(sampler, ())):
            takes = ", ".join(("default", *flow.FLOW_SCHEDULES.get(sampler, ())))
            raise Refused(
                "sigmas",
                f"{family} is a flow-matching model: sampler '{sampler}' has no '{sigmas}' sigmas here, "
                f"use {takes}",
            )
        try:
            return flow.flow_scheduler(sampler, base_config)
        except ValueError as exc:
            raise Refused("sampler", f"{exc} ({family})") from None
    cls, overrides = SAMPLERS[sampler]
    if sigmas == "karras":
        if not supports_karras(sampler):
            raise ValueError(f"sampler '{sampler}' has no Karras sigmas")
        overrides = {**overrides, KARRAS: True}
    return cls, {**dict(base_config), **overrides}


# LCM and TCD space their steps over the 50 of the distilled schedule and refuse more.
STEP_LIMITS: dict[str, int] = {"lcm": 50, "tcd": 50}
BROWNIAN_SEEDS = 2**63 - 1


def step_limit(sampler: str, default: int) -> int:
    """The most steps ``sampler``'s diffusers scheduler accepts (``default`` unless it has its own)."""
    return STEP_LIMITS.get(sampler, default)


def seed_noise_sampler(scheduler: Any, generators: list[torch.Generator]) -> None:
    """Give a Brownian-tree scheduler (dpmpp_sde) one seed per batch item, drawn from its generator,
    so the seed reproduces its noise (diffusers would draw from the global RNG)."""
    if hasattr(scheduler, "noise_sampler_seed"):
        seeds = [int(torch.randint(0, BROWNIAN_SEEDS, [], generator=g)) for g in generators]
        scheduler.noise_sampler_seed = seeds
        scheduler.noise_sampler = None


def denoised_estimate(scheduler: Any, output: Any, sample: torch.Tensor) -> torch.Tensor:
    """The clean latent a scheduler step estimated (ComfyUI's x0 preview, SamplerCustom's
    denoised_output): the step's own ``pred_original_sample`` (``denoised`` for LCM), else the data
    prediction a multistep solver keeps (DPM-Solver++, UniPC), else the step's result ``sample``."""
    for name in ("pred_original_sample", "denoised"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    config = scheduler.config
    predicts_data = getattr(config, "algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++") or getattr(
        config, "predict_x0", False
    )
    kept = getattr(scheduler, "model_outputs", None)
    if predicts_data and kept and kept[-1] is not None:
        return kept[-1]
    return sample
