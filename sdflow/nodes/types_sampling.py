"""Port types of custom sampling: sigma tables, samplers, the starting noise and the guider."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdflow.nodes.types import Conditioning, Model, Port


@dataclass(frozen=True, eq=False)
class Sigmas(Port):
    """A sigma table, highest noise first, usually ending in 0 (ComfyUI's SIGMAS)."""

    values: torch.Tensor


@dataclass(frozen=True)
class Sampler(Port):
    """A sampler chosen by name (KSamplerSelect), for a CustomSchedule to run Sigmas with; ``mode``
    diffusers or comfy (Scheduler's mode)."""

    name: str
    mode: str = "diffusers"


@dataclass(frozen=True)
class Noise(Port):
    """The starting noise of a custom sampler (ComfyUI's NOISE): seeded, or none (``seed`` None,
    DisableNoise: the latent is sampled as it is, e.g. the low half of SplitSigmas)."""

    seed: int | None = None
    stream_seed: int = 0  # without noise, seeds the sampler's own noise if the latent has no stream


@dataclass(frozen=True, eq=False)
class Guider(Port):
    """How a custom sampler forms each step's prediction (ComfyUI's GUIDER): ``positive`` alone, with
    ``negative`` and ``cfg`` CFG, with ``middle`` too DualCFG (sdflow/nodes/ops/guidance.py)."""

    model: Model
    positive: Conditioning
    negative: Conditioning | None = None
    cfg: float = 1.0
    middle: Conditioning | None = None
    cfg_negative: float = 1.0
    nested: bool = False
