"""DenoiseLoop: the sampling loop with classifier-free guidance, written out."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.batch_shape import serial_shaped
from sdflow.nodes.placement import placement
from sdflow.nodes.types import Conditioning, Latent, Model, NoiseState, Schedule


def guided(prediction: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance over a batch laid out [uncond..., cond...]."""
    uncond, cond = prediction.chunk(2)
    return uncond + scale * (cond - uncond)


class DenoiseLoop(Node):
    """Denoise a noised latent with the UNet, guided by positive and negative conditioning.

    A latent with a noise mask is inpainted as diffusers' StableDiffusionInpaintPipeline does: a
    4-channel UNet's result is blended after every step with the original latent re-noised to the
    next timestep (kept where the mask is 0); a 9-channel inpainting UNet instead reads the mask
    and the masked-image latent next to the latent at every step.
    """

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    positive: Conditioning = Field(description="what to draw")
    negative: Conditioning = Field(description="what to steer away from (CLIPEncode of '' for none)")
    latent: Latent = Field(description="a latent noised by AddNoise: it carries the schedule")
    cfg: float = Field(7.5, ge=0.0, le=100.0, description="guidance scale; <= 1 disables guidance")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        state = self._noise_state(ctx)
        scheduler, timesteps = _scheduler(state, ctx.device)
        generator = _generator(state.rng_state)
        guide = self.cfg > 1.0
        device, dtype = placement(self.model.unet)
        x = self.latent.samples.to(device, dtype)
        embeds = self._embeddings(x.shape[0], guide).to(device, dtype)
        extra = self._inpainting_channels(x, guide, ctx)
        mask = self._blend_mask(x, ctx)
        blend = None
        if mask is not None:
            original, noise = state.clean.to(x.device, x.dtype), state.noise.to(x.device, x.dtype)

            def blend(index: int, x: torch.Tensor) -> torch.Tensor:
                # Keep the original outside the mask, re-noised to the *next* timestep, as diffusers.
                kept = original
                if index < len(timesteps) - 1:
                    kept = scheduler.add_noise(original, noise, timesteps[index + 1 : index + 2])
                return (1 - mask) * kept + mask * x

        x = _sample(self.model.unet, scheduler, timesteps, x, embeds, self.cfg, generator, ctx, extra, blend)
        return {"latent": self.latent.with_(samples=x, noise=None, rng_state=generator.get_state())}

    @classmethod
    def run_batch(cls, nodes: list[Node], ctx: RunContext) -> list[dict[str, Any]] | None:
        """Several txt2img/img2img loops (one image each) that share model, schedule, cfg and shapes, as
        one batch: item i keeps its own generator (ancestral noise is drawn per item), so each result
        equals the item's own run. None when the loops cannot share a batch."""
        loops = [node for node in nodes if isinstance(node, DenoiseLoop)]
        if len(loops) != len(nodes) or not _batchable(loops):
            return None
        first = loops[0]
        state = first._noise_state(ctx)
        scheduler, timesteps = _scheduler(state, ctx.device)
        generators = [_generator(loop._noise_state(ctx).rng_state) for loop in loops]
        guide = first.cfg > 1.0
        unet = first.model.unet
        device, dtype = placement(unet)
        x = torch.cat([loop.latent.samples for loop in loops]).to(device, dtype)
        # Interleaved [uncond 1, cond 1, uncond 2, ...]: every slice of two is one serial UNet batch.
        pairs = [
            [loop.negative.embeds, loop.positive.embeds] if guide else [loop.positive.embeds]
            for loop in loops
        ]
        embeds = torch.cat([e for pair in pairs for e in pair]).to(device, dtype)
        serial = 2 if guide else 1
        with serial_shaped(unet, serial * len(loops), serial, device):
            x = _sample(unet, scheduler, timesteps, x, embeds, first.cfg, generators, ctx, interleaved=True)
        return [
            {
                "latent": loop.latent.with_(
                    samples=x[i : i + 1], noise=None, rng_state=generators[i].get_state()
                )
            }
            for i, loop in enumerate(loops)
        ]

    def _noise_state(self, ctx: RunContext) -> NoiseState:
        state = self.latent.noise
        if state is None:
            raise ctx.error("this latent was never noised: pass it through AddNoise first", "latent")
        return state

    def _inpainting_channels(self, x: torch.Tensor, guide: bool, ctx: RunContext) -> torch.Tensor | None:
        """For a 9-channel UNet: [mask, masked-image latent] per batch item (twice when guiding)."""
        if not self.model.is_inpainting:
            return None
        masked_image = self.latent.masked_image
        if self.latent.noise_mask is None or masked_image is None:
            raise ctx.error(
                "this is a 9-channel inpainting model: it needs a latent from VAEEncode with a mask",
                "latent",
            )
        mask = _batch_of(self._checked_mask(x, ctx), x.shape[0])
        masked = _batch_of(masked_image.value(), x.shape[0])
        extra = torch.cat([mask.to(x.device, x.dtype), masked.to(x.device, x.dtype)], dim=1)
        return torch.cat([extra, extra]) if guide else extra

    def _blend_mask(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor | None:
        """The noise mask a 4-channel model blends with after every step (None: no blending)."""
        if self.latent.noise_mask is None or self.model.is_inpainting:
            return None
        return self._checked_mask(x, ctx).to(x.device, x.dtype)

    def _checked_mask(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        mask = self.latent.noise_mask
        assert mask is not None
        if mask.shape[-2:] != x.shape[-2:]:
            raise ctx.error(
                f"the latent's noise mask is {tuple(mask.shape[-2:])} but the latent is "
                f"{tuple(x.shape[-2:])}: resize them together (LatentUpscale does)",
                "latent",
            )
        return mask

    def _embeddings(self, batch: int, guide: bool) -> torch.Tensor:
        """Conditioning repeated to the latent batch; negative first when guiding."""
        parts = [self.negative.embeds, self.positive.embeds] if guide else [self.positive.embeds]
        return torch.cat([_repeat_to(p, batch) for p in parts])


def _batchable(loops: list[DenoiseLoop]) -> bool:
    """One image each, no inpainting, and everything but the noise and the prompts shared."""
    first = loops[0]
    for loop in loops:
        latent, state = loop.latent, loop.latent.noise
        if state is None or latent.noise_mask is not None or latent.masked_image is not None:
            return False
        if loop.model is not first.model or loop.model.is_inpainting or loop.cfg != first.cfg:
            return False
        if latent.samples.shape[0] != 1 or latent.samples.shape != first.latent.samples.shape:
            return False
        first_state = first.latent.noise
        assert first_state is not None
        if state.start_index != first_state.start_index or not _same_schedule(
            state.schedule, first_state.schedule
        ):
            return False
        embeds = (loop.positive.embeds, loop.negative.embeds)
        if any(
            e.shape[0] != 1 or e.shape != f.shape
            for e, f in zip(embeds, (first.positive.embeds, first.negative.embeds), strict=True)
        ):
            return False
    return True


def _same_schedule(a: Schedule, b: Schedule) -> bool:
    return a is b or (
        (a.sampler, a.steps, a.scheduler_class, a.inpainting_model)
        == (b.sampler, b.steps, b.scheduler_class, b.inpainting_model)
        and a.scheduler_config == b.scheduler_config
    )


def _scheduler(state: NoiseState, device: torch.device) -> tuple[Any, torch.Tensor]:
    """A fresh scheduler positioned where AddNoise left the latent, and the timesteps still to run."""
    scheduler = state.schedule.make(device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(state.start_index)
    return scheduler, scheduler.timesteps[state.start_index :]


def _generator(rng_state: torch.Tensor) -> torch.Generator:
    generator = torch.Generator(device="cpu")
    generator.set_state(rng_state)
    return generator


def _sample(
    unet: torch.nn.Module,
    scheduler: Any,
    timesteps: torch.Tensor,
    x: torch.Tensor,
    embeds: torch.Tensor,
    cfg: float,
    generator: torch.Generator | list[torch.Generator],
    ctx: RunContext,
    extra: torch.Tensor | None = None,
    blend: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    interleaved: bool = False,
) -> torch.Tensor:
    """The loop: UNet on [uncond, cond] (or cond alone when cfg <= 1), guidance, scheduler step;
    ``extra`` channels go next to the latent (9-channel inpainting), ``blend`` runs after each step.
    A list of generators draws each batch item's step noise from its own generator; ``interleaved``
    lays the guided batch out [uncond 1, cond 1, uncond 2, cond 2, ...] (``embeds`` likewise)."""
    guide = cfg > 1.0
    step_kwargs = {"generator": generator} if _takes(scheduler.step, "generator") else {}
    with torch.inference_mode():
        for index, t in enumerate(timesteps):
            if guide:
                model_input = x.repeat_interleave(2, dim=0) if interleaved else torch.cat([x, x])
            else:
                model_input = x
            model_input = scheduler.scale_model_input(model_input, t)
            if extra is not None:
                model_input = torch.cat([model_input, extra], dim=1)
            prediction = unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            if guide and interleaved:
                pairs = prediction.unflatten(0, (-1, 2))
                prediction = guided(torch.cat([pairs[:, 0], pairs[:, 1]]), cfg)
            elif guide:
                prediction = guided(prediction, cfg)
            x = scheduler.step(prediction, t, x, **step_kwargs, return_dict=False)[0]
            if blend is not None:
                x = blend(index, x)
            ctx.step(index + 1, len(timesteps), x)
    return x


def _repeat_to(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    return embeds if embeds.shape[0] == batch else embeds.repeat_interleave(batch // embeds.shape[0], 0)


def _batch_of(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.repeat(batch // tensor.shape[0], 1, 1, 1)


def _takes(function: Any, name: str) -> bool:
    return name in inspect.signature(function).parameters
