"""Port types of prompting with a picture: CLIP vision models, their outputs, IP-Adapters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sdflow.nodes.types import Port


@dataclass(frozen=True, eq=False)
class ClipVision(Port):
    """A CLIP vision encoder (CLIPVisionModelWithProjection) with its preprocessing
    (``sdflow.models.clip_vision.Preprocess``)."""

    model: torch.nn.Module
    preprocess: Any
    name: str = ""


@dataclass(frozen=True, eq=False)
class ClipVisionOutput(Port):
    """What CLIPVisionEncode says of a picture batch."""

    image_embeds: torch.Tensor  # (batch, projection_dim)
    penultimate: torch.Tensor  # (batch, tokens, hidden)
    last_hidden_state: torch.Tensor  # (batch, tokens, hidden)


@dataclass(frozen=True, eq=False)
class IPAdapter(Port):
    """An IP-Adapter (``sdflow.models.ip_adapter.IPAdapterWeights``) and the file's name."""

    weights: Any
    name: str = ""

    def tensors(self) -> Iterator[torch.Tensor]:
        yield from self.weights.projection.parameters()
        for key, value in self.weights.layers.values():
            yield key
            yield value
