"""Port types of prompting with a picture: CLIP vision models, their outputs, IP-Adapters, the image
prompts a model and the unCLIP pictures a conditioning carry."""

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


@dataclass(frozen=True, eq=False)
class ImagePrompt(Port):
    """One ApplyIPAdapter: its image tokens (1, tokens, width) for each CFG side, weight and window;
    ``processors`` are the UNet's IP-Adapter attention processors (with a scale slot per prompt)."""

    negative: torch.Tensor
    positive: torch.Tensor
    weight: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    processors: tuple[Any, ...] = ()


@dataclass(frozen=True, eq=False)
class UnclipEntry(Port):
    """One picture of unCLIPConditioning: its CLIP image embeds (1, dim), strength, noise level
    (0..999) and the noise (1, dim) its augmentation adds."""

    embeds: torch.Tensor
    strength: float
    noise_level: int
    noise: torch.Tensor
