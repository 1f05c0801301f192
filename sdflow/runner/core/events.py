"""Events the runner emits while it works; the CLI's progress bars listen to the same ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sdflow.models.families import Family


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
    """One denoising step: ``index`` counts from 1 to ``total``; ``latent`` is the current sample.
    ``family`` and ``source`` are the denoised model's (its family and checkpoint folder, when the
    node has a model input): what a preview of the latent needs."""

    node_id: str
    index: int
    total: int
    latent: torch.Tensor
    family: Family | None = None
    source: str | None = None


@dataclass(frozen=True)
class NodeWarning:
    """A node carried on but something was lost or odd; ``message`` starts with where."""

    node_id: str
    type: str
    message: str


Event = NodeStarted | NodeFinished | StepProgress | NodeWarning
Listener = Callable[[Event], None]
