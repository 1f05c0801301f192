"""The port type of pixel upscale models (spandrel's ESRGAN, Compact, SwinIR...)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from sdflow.nodes.types import Port


@dataclass(frozen=True, eq=False)
class UpscaleModel(Port):
    """A pixel upscale model (ESRGAN, Compact, SwinIR...) as spandrel loaded it, with its scale."""

    upscaler: Any  # sdflow.models.upscale.Upscaler

    def tensors(self) -> Iterator[torch.Tensor]:
        yield from self.upscaler.descriptor.model.parameters()
        yield from self.upscaler.descriptor.model.buffers()
