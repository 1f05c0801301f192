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
    """Denoise a noised latent with the UNet, guided by positive and negative conditioning."""

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
        x = self.latent.samples.to(unet.device, unet.dtype)
        embeds = self._embeddings(x.shape[0], guide).to(unet.device, unet.dtype)
        with torch.inference_mode():
            for index, t in enumerate(timesteps):
                model_input = torch.cat([x, x]) if guide else x
                model_input = scheduler.scale_model_input(model_input, t)
                prediction = unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
                if guide:
                    prediction = guided(prediction, self.cfg)
                x = scheduler.step(prediction, t, x, **step_kwargs, return_dict=False)[0]
                ctx.step(index + 1, len(timesteps), x)
        return {"latent": self.latent.with_(samples=x, noise=None, rng_state=generator.get_state())}

    def _embeddings(self, batch: int, guide: bool) -> torch.Tensor:
        """Conditioning repeated to the latent batch; negative first when guiding."""
        parts = [self.negative.embeds, self.positive.embeds] if guide else [self.positive.embeds]
        return torch.cat([_repeat_to(p, batch) for p in parts])


def _repeat_to(embeds: torch.Tensor, batch: int) -> torch.Tensor:
    return embeds if embeds.shape[0] == batch else embeds.repeat_interleave(batch // embeds.shape[0], 0)


def _takes(function: Any, name: str) -> bool:
    return name in inspect.signature(function).parameters
