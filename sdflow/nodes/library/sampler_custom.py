"""SamplerCustom: SamplerCustomAdvanced with its noise and classifier-free guider as fields."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.library.sampler_custom_advanced import OUTPUTS, sample_custom
from sdflow.nodes.types import Conditioning, Latent, Model
from sdflow.nodes.types_sampling import Guider, Noise, Sampler, Sigmas


class SamplerCustom(Node):
    """Denoise a latent down a Sigmas table with a sampler and CFG (ComfyUI's SamplerCustom).

    SamplerCustomAdvanced with a CFG guider and a noise in one node; add_noise off continues a latent
    as it is (SplitSigmas' low half)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = OUTPUTS
    same_family: ClassVar[tuple[str, ...]] = ("model", "positive", "negative")
    repeats: ClassVar[bool] = True

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    add_noise: bool = Field(True, description="start from seeded noise; off: denoise the latent as it is")
    noise_seed: int = Field(0, ge=0, le=MAX_SEED, description="the noise seed (also the sampler's own noise)")
    cfg: float = Field(8.0, ge=0.0, le=100.0, description="guidance scale; <= 1 disables guidance")
    positive: Conditioning = Field(description="what to draw")
    negative: Conditioning = Field(description="what to steer away from")
    sampler: Sampler = Field(description="the sampling algorithm, from KSamplerSelect")
    sigmas: Sigmas = Field(description="the sigma table, from BasicScheduler, SplitSigmas, ...")
    latent_image: Latent = Field(description="the latent to denoise (EmptyLatent for txt2img)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        noise = Noise(self.noise_seed) if self.add_noise else Noise(None, self.noise_seed)
        guider = Guider(self.model, self.positive, self.negative, self.cfg)
        return sample_custom(ctx, noise, guider, self.sampler, self.sigmas, self.latent_image)
