"""RandomNoise: seeded starting noise for SamplerCustomAdvanced."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.types_sampling import Noise


class RandomNoise(Node):
    """Seeded starting noise for SamplerCustomAdvanced (ComfyUI's RandomNoise).

    Drawn on the CPU with this seed, as AddNoise draws it."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"noise": Noise}

    noise_seed: int = Field(0, ge=0, le=MAX_SEED, description="the noise seed")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"noise": Noise(self.noise_seed)}
