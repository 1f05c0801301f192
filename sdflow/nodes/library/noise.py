"""Scheduler and AddNoise: choose the noise schedule once, noise a latent to where it starts."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.samplers import SamplerName, scheduler_for
from sdflow.nodes.types import Latent, Model, NoiseState, Schedule

MAX_SEED = 2**63 - 1
# Beyond this, several diffusers schedulers index past the 1000 training timesteps or divide by
# zero (DDIM, DDPM and PNDM at 1000 steps; LMS, DPM-Solver++ and UniPC at 999): far more steps
# than any sampler gains from.
MAX_STEPS = 500


class Scheduler(Node):
    """Pick a sampler and step count; AddNoise and DenoiseLoop both follow this schedule."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"schedule": Schedule}

    model: Model = Field(description="the model whose training noise schedule to use")
    sampler: SamplerName = Field("euler", description="sampling algorithm")
    steps: int = Field(
        20,
        ge=1,
        le=MAX_STEPS,
        description="denoising steps for the full schedule (diffusers' schedulers fail near 1000)",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        cls, config = scheduler_for(self.sampler, self.model.scheduler_config)
        schedule = Schedule(self.sampler, self.steps, cls, config, self.model.is_inpainting)
        return {"schedule": schedule}


def start_index(steps: int, strength: float, order: int) -> int:
    """Index of the first timestep to run, as diffusers' img2img computes it from ``strength``."""
    kept = min(int(steps * strength), steps)
    return max(steps - kept, 0) * order


class AddNoise(Node):
    """Add seeded noise to a latent, to the level that strength selects on the schedule.

    As diffusers: img2img noises the latent to the first kept timestep, even at strength 1; an
    empty latent (txt2img) or, at strength 1, an inpainting latent (one with a noise mask) starts
    from pure noise times the scheduler's initial sigma. For an inpainting latent the masked-image
    latent is sampled right after the noise, from the same stream, as diffusers' inpaint pipeline
    does; with a 9-channel model at strength 1 and seed null, the stream restarts where VAEEncode
    seeded it, since diffusers never samples the (unused) image latent then.
    """

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    latent: Latent = Field(description="the latent to noise (EmptyLatent for txt2img)")
    schedule: Schedule = Field(description="the noise schedule, from a Scheduler node")
    seed: int | None = Field(
        0,
        ge=0,
        le=MAX_SEED,
        description="noise seed; null continues the latent's random stream (VAEEncode's seed)",
    )
    strength: float = Field(1.0, ge=0.0, le=1.0, description="how much to repaint: 1 = all steps, 0 = none")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        latent, clean = self.latent, self.latent.samples
        scheduler = self.schedule.make(ctx.device)
        first = start_index(self.schedule.steps, self.strength, scheduler.order)
        generator = self._generator(ctx)
        # Drawn on the CPU in float32, whatever the device: a seed gives the same noise anywhere.
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(clean.device, clean.dtype)
        pure = self.strength == 1.0 and (latent.is_empty or latent.noise_mask is not None)
        if pure:
            samples = noise * scheduler.init_noise_sigma
        elif first >= len(scheduler.timesteps):
            samples = clean
        else:
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(first)
            timestep = scheduler.timesteps[first : first + 1].repeat(clean.shape[0])
            samples = scheduler.add_noise(clean, noise, timestep)
        masked_image = latent.masked_image
        if masked_image is not None and masked_image.latents is None:
            masked_image = masked_image.drawn(generator)
        state = NoiseState(self.schedule, first, noise, clean, generator.get_state())
        return {
            "latent": latent.with_(
                samples=samples,
                noise=state,
                rng_state=generator.get_state(),
                is_empty=False,
                masked_image=masked_image,
            )
        }

    def _generator(self, ctx: RunContext) -> torch.Generator:
        generator = torch.Generator(device="cpu")
        if self.seed is not None:
            return generator.manual_seed(self.seed)
        if self.latent.rng_state is None:
            raise ctx.error(
                "seed is null but the latent carries no random stream to continue: give a seed",
                "seed",
            )
        masked_image = self.latent.masked_image
        fresh = masked_image is not None and masked_image.latents is None  # straight from VAEEncode
        if fresh and self.schedule.inpainting_model and self.strength == 1.0:
            generator.set_state(masked_image.stream_start)
        else:
            generator.set_state(self.latent.rng_state)
        return generator
