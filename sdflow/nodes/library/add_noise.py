"""AddNoise: noise a latent to where its schedule starts (img2img strength, a resumed split, txt2img)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED, MAX_STEPS
from sdflow.nodes.ops.comfy_tables import noise_scale
from sdflow.nodes.ops.schedule_window import start_at, start_index
from sdflow.nodes.ops.sigma_schedules import TrainingSigmas
from sdflow.nodes.ops.split import START_ALIASES, StartPoint, chosen, conflicts, resume_index
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Latent, NoiseState, Schedule


class AddNoise(Node):
    """Add seeded noise to a latent, to the level that strength selects on the schedule.

    As diffusers: img2img noises the latent to the first kept timestep, even at strength 1; an
    empty latent (txt2img) or, at strength 1, an inpainting latent (one with a noise mask) starts
    from pure noise times the scheduler's initial sigma. For an inpainting latent the masked-image
    latent is sampled right after the noise, from the same stream, as diffusers' inpaint pipeline
    does; with a 9-channel model at strength 1 and seed null, the stream restarts where VAEEncode
    seeded it, since diffusers never samples the (unused) image latent then.

    A latent a DenoiseLoop stopped early (end_at), or any latent with start_at a fraction, is not
    noised: the schedule resumes where it was cut (diffusers' denoising_start), e.g. an SDXL refiner
    finishing what the base began. The seed then only drives ancestral samplers. start_at as a step
    (ComfyUI's start_at_step) resumes a stopped latent at that step; any other latent is noised to
    that step, as strength would.
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
    start_at: StartPoint | None = Field(
        None,
        description=(
            "begin here instead of where strength puts it: at this step of the schedule (an int: "
            "ComfyUI's start_at_step; a latent a DenoiseLoop stopped goes on as it is, any other is "
            "noised to that step) or, without adding noise, at this fraction of it (a float: diffusers' "
            "denoising_start); null = strength, or where the latent's DenoiseLoop stopped (end_at)"
        ),
    )
    denoise_start: float | None = Field(
        None, ge=0.0, lt=1.0, description="alias of start_at as a fraction (diffusers' denoising_start)"
    )
    start_step: int | None = Field(None, ge=0, le=MAX_STEPS, description="alias of start_at as a step")

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return conflicts(constants, "start_at", START_ALIASES)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.schedule.mode == "comfy":
            return {"latent": self._comfy(ctx)}
        latent, clean = self.latent, _fitted(self.latent, self.schedule.latent_channels)
        scheduler = self.schedule.make(ctx.device, tuple(clean.shape[-2:]))
        start, field = chosen(self.__dict__, "start_at", START_ALIASES)
        if isinstance(start, float):
            return {"latent": self._resumed(start_at(scheduler, start), scheduler, field, ctx)}
        if start is not None and latent.cut is not None:
            return {"latent": self._resumed(start * scheduler.order, scheduler, field, ctx)}
        if latent.cut is not None:
            return {"latent": self._resumed(resume_index(latent.cut, scheduler), scheduler, field, ctx)}
        if start is not None:
            first = start * scheduler.order
        else:
            first = start_index(self.schedule.steps, self.strength, scheduler.order, self.schedule.family)
        generator = self._generator(ctx)
        # Drawn on the CPU in float32, whatever the device: a seed gives the same noise anywhere.
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
        noise = noise.to(clean.device, clean.dtype)
        full = self.strength == 1.0 if start is None else first == 0
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

    def _comfy(self, ctx: RunContext) -> Latent:
        """Comfy mode: the latent plus the seed's noise times the first sigma to run (times
        sqrt(1 + sigma^2) from full noise), as ComfyUI's KSampler starts; a latent a DenoiseLoop
        stopped goes on as it is. The seed also seeds the sampler's own noise."""
        latent, schedule = self.latent, self.schedule
        start, field = chosen(self.__dict__, "start_at", START_ALIASES)
        if isinstance(start, float):
            raise ctx.error("in comfy mode start_at is a step (an int), not a fraction", field)
        if self.seed is None:
            raise ctx.error("comfy mode seeds ComfyUI's noise with a number: give a seed", "seed")
        table = schedule.comfy_sigmas
        assert table is not None
        if latent.cut is not None:  # ComfyUI's add_noise disable: the latent as it is, no noise
            first = start if start is not None else latent.cut.index
            quiet = torch.zeros_like(latent.samples)
            state = NoiseState(
                schedule, first, quiet, latent.samples, self._generator(ctx).get_state(), self.seed
            )
            return latent.with_(noise=state, cut=None)
        clean = _fitted(latent, schedule.latent_channels)
        steps = len(table) - 1
        first = start if start is not None else schedule.family.skipped_steps(steps, self.strength)
        generator = self._generator(ctx)
        noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32).to(clean.device)
        if first >= steps:
            samples = clean
        else:
            sigma_max = TrainingSigmas(schedule.scheduler_config).sigma_max
            samples = noise * noise_scale(table[first], sigma_max) + clean.float()
        masked_image = latent.masked_image
        if masked_image is not None and masked_image.latents is None:
            masked_image = masked_image.drawn(generator)
        state = NoiseState(schedule, first, noise, clean, generator.get_state(), self.seed)
        return latent.with_(
            samples=samples,
            noise=state,
            rng_state=generator.get_state(),
            is_empty=False,
            masked_image=masked_image,
        )

    def _resumed(self, first: int, scheduler: Any, field: str, ctx: RunContext) -> Latent:
        """The latent as it is, set to continue at timestep index ``first`` of this schedule; nothing
        drawn."""
        latent = self.latent
        if latent.is_empty:
            raise ctx.error(
                f"an empty latent has nothing to resume: use {field} on a latent a DenoiseLoop "
                "stopped early (end_at), or leave it null",
                field,
            )
        generator = self._generator(ctx)
        previous = latent.noise  # a stopped DenoiseLoop's state: the original and noise to blend with
        clean = previous.clean if previous is not None else latent.samples
        noise = previous.noise if previous is not None else torch.zeros_like(latent.samples)
        state = NoiseState(self.schedule, first, noise, clean, generator.get_state())
        return latent.with_(noise=state, rng_state=generator.get_state(), cut=None)

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


def _fitted(latent: Latent, channels: int) -> torch.Tensor:
    """An empty latent (EmptyLatent, txt2img) takes the channel count of the schedule's model (16 for
    SD3 and Flux), so one txt2img graph serves every family; any other latent stays as it is."""
    samples = latent.samples
    if latent.is_empty and samples.shape[1] != channels:
        return samples.new_zeros((samples.shape[0], channels, *samples.shape[2:]))
    return samples
