"""SamplerCustomAdvanced: run a Sigmas table with a sampler, a guider and a starting noise, through
CustomSchedule, AddNoise and DenoiseLoop (the custom samplers are those nodes, composed)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.add_noise import AddNoise
from sdflow.nodes.library.custom_schedule import CustomSchedule
from sdflow.nodes.library.denoise_loop import DenoiseLoop
from sdflow.nodes.ops import guidance
from sdflow.nodes.types import Latent, NoiseState
from sdflow.nodes.types_sampling import Guider, Noise, Sampler, Sigmas

OUTPUTS: dict[str, type] = {"latent": Latent, "denoised": Latent}


def sample_custom(
    ctx: RunContext, noise: Noise, guider: Guider, sampler: Sampler, sigmas: Sigmas, latent: Latent
) -> dict[str, Any]:
    """SamplerCustom(Advanced)'s outputs: ``latent`` (ComfyUI's output) is ``latent`` noised by
    ``noise`` to the table's first sigma (as AddNoise at strength 1), then denoised down the table by
    ``sampler`` as ``guider`` guides (DenoiseLoop); ``denoised`` (ComfyUI's denoised_output) is the
    last step's estimate of the clean latent. Without noise the latent goes on as it is, its random
    stream (ancestral noise) continuing: SplitSigmas' low half resumes what the high half left."""
    if len(sigmas.values) < 2:  # nothing to step (BasicScheduler at denoise 0)
        return {"latent": latent, "denoised": latent}
    schedule = CustomSchedule.model_construct(model=guider.model, sampler=sampler, sigmas=sigmas).run(ctx)
    schedule = schedule["schedule"]
    if noise.seed is not None:
        adding = AddNoise.model_construct(latent=latent, schedule=schedule, seed=noise.seed)
        noised = adding.run(ctx)["latent"]
    else:
        generator = torch.Generator(device="cpu")
        if latent.rng_state is not None:
            generator.set_state(latent.rng_state)
        else:
            generator.manual_seed(noise.stream_seed)  # as ComfyUI seeds the sampler's noise
        samples = latent.samples
        state = NoiseState(
            schedule, 0, torch.zeros_like(samples), samples, generator.get_state(), noise.stream_seed
        )
        noised = latent.with_(noise=state, rng_state=generator.get_state(), is_empty=False, cut=None)
    negative = guider.negative if guider.negative is not None else guider.positive
    loop = DenoiseLoop.model_construct(
        model=guider.model, positive=guider.positive, negative=negative, latent=noised, cfg=guider.cfg
    )
    output, denoised = loop.sample(ctx, guidance.of(guider, comfy=schedule.mode == "comfy"))
    return {"latent": output, "denoised": output.with_(samples=denoised)}


class SamplerCustomAdvanced(Node):
    """Denoise a latent down a Sigmas table with a noise, guider and sampler (ComfyUI's node).

    The noise from RandomNoise or DisableNoise, the guider from BasicGuider, CFGGuider or
    DualCFGGuider, the sampler from KSamplerSelect; equal to CustomSchedule -> AddNoise ->
    DenoiseLoop with the same settings."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = OUTPUTS
    repeats: ClassVar[bool] = True

    noise: Noise = Field(description="the starting noise, from RandomNoise or DisableNoise")
    guider: Guider = Field(description="how each step is guided, from a guider node")
    sampler: Sampler = Field(description="the sampling algorithm, from KSamplerSelect")
    sigmas: Sigmas = Field(description="the sigma table, from BasicScheduler, SplitSigmas, ...")
    latent_image: Latent = Field(description="the latent to denoise (EmptyLatent for txt2img)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return sample_custom(ctx, self.noise, self.guider, self.sampler, self.sigmas, self.latent_image)
