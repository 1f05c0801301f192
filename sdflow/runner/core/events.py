"""Events the runner emits while it works; the CLI's progress bars listen to the same ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NodeStarted:
    node_id: str
    type: str


@dataclass(frozen=True)
class NodeFinished:
    node_id: str
    type: str
    status: str  # "ran" or "cached"
    seconds: float


@dataclass(frozen=True)
class StepProgress:
    """One denoising step: ``index`` counts from 1 to ``total``; ``latent`` is the current sample."""

    node_id: str
    index: int
    total: int
    latent: torch.Tensor


@dataclass(frozen=True)
class NodeWarning:
    """A node carried on but something was lost or odd; ``message`` starts with where."""

    node_id: str
    type: str
    message: str


Event = NodeStarted | NodeFinished | StepProgress | NodeWarning
Listener = Callable[[Event], None]
