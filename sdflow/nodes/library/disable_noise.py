"""DisableNoise: no starting noise, for SamplerCustomAdvanced to go on with a latent as it is."""

from __future__ import annotations

from typing import Any, ClassVar

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types_sampling import Noise


class DisableNoise(Node):
    """No starting noise: the sampler denoises the latent as it is (ComfyUI's DisableNoise).

    For the low half of SplitSigmas, after a sampler that ran the high half."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"noise": Noise}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"noise": Noise(None)}
