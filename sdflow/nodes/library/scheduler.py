"""Scheduler and AddNoise: choose the noise schedule once, noise a latent to where it starts."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.samplers import (
    SAMPLERS,
    SamplerName,
    SigmasName,
    karras_samplers,
    scheduler_for,
    step_limit,
    supports_karras,
    unavailable,
)
from sdflow.nodes.schedule_window import start_at, start_index
from sdflow.nodes.types import Latent, Model, NoiseState, Schedule

MAX_SEED = 2**63 - 1
# Beyond this, several diffusers schedulers index past the 1000 training timesteps or divide by
# zero (DDIM, DDPM and PNDM at 1000 steps; LMS, DPM-Solver++ and UniPC at 999): far more steps
# than any sampler gains from.
MAX_STEPS = 500


class Scheduler(Node):
    """Pick a sampler and step count; AddNoise and DenoiseLoop both follow this schedule."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"schedule": Schedule}

    model: Model = Field(description="the model whose training noise schedule to use")
    sampler: SamplerName = Field("euler", description="sampling algorithm")
    steps: int = Field(
        20,
        ge=1,
        le=MAX_STEPS,
        description="denoising steps for the full schedule (diffusers' schedulers fail near 1000)",
    )
    sigmas: SigmasName = Field(
        "default",
        description=(
            "step spacing: the sampler's own, or karras (ComfyUI's 'karras' scheduler; for "
            + ", ".join(karras_samplers())
            + "); dpmpp_2m_karras is dpmpp_2m with karras"
        ),
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        sampler = constants.get("sampler", "euler")
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            return [("sampler", unavailable(sampler))]
        if constants.get("sigmas") == "karras" and isinstance(sampler, str) and not supports_karras(sampler):
            message = f"sampler '{sampler}' has no Karras sigmas: use one of {', '.join(karras_samplers())}"
            return [("sigmas", message + ", or sigmas: default")]
        steps = constants.get("steps")
        if isinstance(sampler, str) and isinstance(steps, int) and steps > step_limit(sampler, MAX_STEPS):
            return [("steps", f"sampler '{sampler}' takes at most {step_limit(sampler, MAX_STEPS)} steps")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.sampler not in SAMPLERS:
            raise ctx.error(unavailable(self.sampler), "sampler")
        try:
            cls, config = scheduler_for(self.sampler, self.model.scheduler_config, self.sigmas)
        except ValueError as exc:  # a sampler given by a link-free input the precheck could not see
            raise ctx.error(str(exc), "sigmas") from None
        if self.steps > step_limit(self.sampler, MAX_STEPS):
            raise ctx.error(
                f"sampler '{self.sampler}' takes at most {step_limit(self.sampler, MAX_STEPS)} steps", "steps"
            )
        schedule = Schedule(self.sampler, self.steps, cls, config, self.model.is_inpainting)
        return {"schedule": schedule}


class AddNoise(Node):
    """Add seeded noise to a latent, to the level that strength selects on the schedule.

    As diffusers: img2img noises the latent to the first kept timestep, even at strength 1; an
    empty latent (txt2img) or, at strength 1, an inpainting latent (one with a noise mask) starts
    from pure noise times the scheduler's initial sigma. For an inpainting latent the masked-image
    latent is sampled right after the noise, from the same stream, as diffusers' inpaint pipeline
    does; with a 9-channel model at strength 1 and seed null, the stream restarts where VAEEncode
    seeded it, since diffusers never samples the (unused) image latent then.

    A latent a DenoiseLoop stopped early (denoise_end), or any latent with denoise_start set, is not
    noised: the schedule resumes at that fraction (diffusers' denoising_start), e.g. an SDXL refiner
    finishing what the base began. The seed then only drives ancestral samplers. start_step does
    the same in steps (ComfyUI's start_at_step): a latent a DenoiseLoop stopped (end_step) resumes
    at it; any other latent is noised to that step, as strength would.
    """

    version: ClassVar[int] = 2
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
    denoise_start: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description=(
            "resume the schedule at this fraction without adding noise (strength is then ignored; "
            "diffusers' denoising_start); null = where the latent's DenoiseLoop stopped (denoise_end), "
            "if it stopped early"
        ),
    )
    start_step: int | None = Field(
        None,
        ge=0,
        le=MAX_STEPS,
        description=(
            "begin at this step of the schedule instead of where strength puts it (ComfyUI's "
            "start_at_step): a latent a DenoiseLoop stopped (end_step) continues as it is, any other is "
            "noised to that step; null = strength, or where the latent's DenoiseLoop stopped"
        ),
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        if constants.get("start_step") is not None and constants.get("denoise_start") is not None:
            return [("start_step", "give start_step or denoise_start, not both")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        latent, clean = self.latent, self.latent.samples
        scheduler = self.schedule.make(ctx.device)
        if self.denoise_start is not None:
            return {"latent": self._resumed(start_at(scheduler, self.denoise_start), scheduler, ctx)}
        step = self.start_step if self.start_step is not None else latent.stopped_step
        if step is not None and (latent.stopped_step is not None or latent.stopped_at is not None):
            return {"latent": self._resumed(step * scheduler.order, scheduler, ctx)}
        if latent.stopped_at is not None:
            return {"latent": self._resumed(start_at(scheduler, latent.stopped_at), scheduler, ctx)}
        if self.start_step is not None:
            first = self.start_step * scheduler.order
        else:
            first = start_index(self.schedule.steps, self.strength, scheduler.order)
        generator = self._generator(ctx)
        # Drawn on the CPU in float32, whatever the device: a seed gives the same noise anywhere.
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(clean.device, clean.dtype)
        full = self.strength == 1.0 if self.start_step is None else first == 0
        pure = full and (latent.is_empty or latent.noise_mask is not None)
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

    def _resumed(self, first: int, scheduler: Any, ctx: RunContext) -> Latent:
        """The latent as it is, set to continue at timestep index ``first`` of this schedule; nothing
        drawn."""
        latent = self.latent
        if latent.is_empty:
            raise ctx.error(
                "an empty latent has nothing to resume: use denoise_start on a latent a DenoiseLoop "
                "stopped early (denoise_end), or leave it null",
                "denoise_start",
            )
        generator = self._generator(ctx)
        previous = latent.noise  # a stopped DenoiseLoop's state: the original and noise to blend with
        clean = previous.clean if previous is not None else latent.samples
        noise = previous.noise if previous is not None else torch.zeros_like(latent.samples)
        state = NoiseState(self.schedule, first, noise, clean, generator.get_state())
        return latent.with_(noise=state, rng_state=generator.get_state(), stopped_at=None, stopped_step=None)

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
