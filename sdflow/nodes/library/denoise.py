"""DenoiseLoop: the sampling loop with classifier-free guidance, written out."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning, Latent, Model


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
        state = self.latent.noise
        if state is None:
            raise ctx.error("this latent was never noised: pass it through AddNoise first", "latent")
        unet = self.model.unet
        scheduler = state.schedule.make(ctx.device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(state.start_index)
        timesteps = scheduler.timesteps[state.start_index :]
        generator = torch.Generator(device="cpu")
        generator.set_state(state.rng_state)
        step_kwargs = {"generator": generator} if _takes(scheduler.step, "generator") else {}

        guide = self.cfg > 1.0
        # The weights' placement, from one parameter: diffusers' unet.device/.dtype walk every
        # submodule (about a millisecond each on the CPU).
        weights = next(unet.parameters())
        x = self.latent.samples.to(weights.device, weights.dtype)
        embeds = self._embeddings(x.shape[0], guide, ctx).to(weights.device, weights.dtype)
        extra = self._inpainting_channels(x, guide, ctx)
        mask = self._blend_mask(x, ctx)
        if mask is not None:
            original, noise = state.clean.to(x.device, x.dtype), state.noise.to(x.device, x.dtype)
        with torch.inference_mode():
            for index, t in enumerate(timesteps):
                model_input = torch.cat([x, x]) if guide else x
                model_input = scheduler.scale_model_input(model_input, t)
                if extra is not None:
                    model_input = torch.cat([model_input, extra], dim=1)
                prediction = unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
                if guide:
                    prediction = guided(prediction, self.cfg)
                x = scheduler.step(prediction, t, x, **step_kwargs, return_dict=False)[0]
                if mask is not None:
                    # Keep the original outside the mask, re-noised to the *next* timestep, as diffusers.
                    kept = original
                    if index < len(timesteps) - 1:
                        kept = scheduler.add_noise(original, noise, timesteps[index + 1 : index + 2])
                    x = (1 - mask) * kept + mask * x
                ctx.step(index + 1, len(timesteps), x)
        return {"latent": self.latent.with_(samples=x, noise=None, rng_state=generator.get_state())}

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

    def _embeddings(self, batch: int, guide: bool, ctx: RunContext) -> torch.Tensor:
        """Conditioning repeated to the latent batch; negative first when guiding. A long prompt on
        one side is met by empty-prompt chunks on the other (as A1111 and ComfyUI pad)."""
        parts = {"negative": self.negative, "positive": self.positive}
        if not guide:
            del parts["negative"]
        tokens = max(p.tokens for p in parts.values())
        embeds = []
        for name, part in parts.items():
            try:
                part = part.padded_to(tokens)
            except ValueError as exc:
                raise ctx.error(f"{exc}: positive and negative must be whole 77-token chunks", name) from None
            if batch % part.embeds.shape[0]:
                raise ctx.error(
                    f"{part.embeds.shape[0]} prompts do not divide the latent batch of {batch}: "
                    f"make the latent batch a multiple of the number of prompts",
                    name,
                )
            embeds.append(_repeat_to(part.embeds, batch))
        return torch.cat(embeds)


def _repeat_to(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    return embeds if embeds.shape[0] == batch else embeds.repeat_interleave(batch // embeds.shape[0], 0)


def _batch_of(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.repeat(batch // tensor.shape[0], 1, 1, 1)


def _takes(function: Any, name: str) -> bool:
    return name in inspect.signature(function).parameters
