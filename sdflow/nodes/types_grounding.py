"""Port types of GLIGEN: the loaded model and the phrase boxes a conditioning carries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sdflow.nodes.types import Port


@dataclass(frozen=True, eq=False)
class Gligen(Port):
    """A GLIGEN (``sdflow.models.gligen.GligenWeights``: gated self-attention layers and a position
    net) and the file's name."""

    weights: Any
    name: str = ""

    def tensors(self) -> Iterator[torch.Tensor]:
        for state in (*self.weights.fusers.values(), self.weights.position_net):
            yield from state.values()


@dataclass(frozen=True, eq=False)
class GroundingBox(Port):
    """One GLIGENTextBoxApply: the phrase's pooled text embedding (width,), its box in latent cells
    (x, y, width, height: ComfyUI's pixels // 8), the fraction of the steps it acts on (from the
    first), and how the loop draws conditioning without boxes (``unboxed``: "plain" or "empty")."""

    gligen: Gligen
    phrase: torch.Tensor
    box: tuple[int, int, int, int]
    beta: float = 1.0
    unboxed: str = "plain"
