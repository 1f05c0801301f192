"""AddNoise: noise a latent to where its schedule starts (img2img strength, a resumed split, txt2img)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_SEED, MAX_STEPS
from sdflow.nodes.ops.schedule_window import start_at, start_index
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
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
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
