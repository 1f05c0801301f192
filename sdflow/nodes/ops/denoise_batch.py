"""DenoiseLoop over a batch of sweep items: one UNet call per step for all of them, each item with its
own generator, so every item's result equals its own run's (see sdflow.nodes.ops.batch_shape)."""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import torch

from sdflow.nodes.base import RunContext
from sdflow.nodes.ops.batch_shape import serial_shaped
from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.samplers import seed_noise_sampler
from sdflow.nodes.types import Conditioning, Latent, Model, NoiseState, Schedule


class LoopItem(Protocol):
    """What a batched loop reads of each DenoiseLoop node: its linked inputs and guidance."""

    model: Model
    positive: Conditioning
    negative: Conditioning
    latent: Latent
    cfg: float


def run_together(loops: list[LoopItem], ctx: RunContext) -> list[dict[str, Any]] | None:
    """The outputs of each loop, computed as one batch; None when they cannot share one."""
    if not _batchable(loops):
        return None
    first = loops[0]
    state = first.latent.noise
    assert state is not None
    scheduler = state.schedule.make(ctx.device, tuple(first.latent.samples.shape[-2:]))
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(state.start_index)
    timesteps = scheduler.timesteps[state.start_index :]
    generators = []
    for loop in loops:
        assert loop.latent.noise is not None
        generators.append(torch.Generator(device="cpu"))
        generators[-1].set_state(loop.latent.noise.rng_state)
    seed_noise_sampler(scheduler, generators)
    guide = first.cfg > 1.0
    unet = first.model.unet
    device, dtype = placement(unet)
    x = torch.cat([loop.latent.samples for loop in loops]).to(device, dtype)
    # Interleaved [uncond 1, cond 1, uncond 2, ...]: every slice of two is one serial UNet batch.
    pairs = [
        [loop.negative.embeds, loop.positive.embeds] if guide else [loop.positive.embeds] for loop in loops
    ]
    embeds = torch.cat([e for pair in pairs for e in pair]).to(device, dtype)
    serial = 2 if guide else 1
    step_kwargs = (
        {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}
    )
    with serial_shaped(unet, serial * len(loops), serial, device), torch.inference_mode():
        for index, t in enumerate(timesteps):
            model_input = x.repeat_interleave(2, dim=0) if guide else x
            model_input = scheduler.scale_model_input(model_input, t)
            prediction = unet(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            if guide:
                uncond, cond = prediction[0::2], prediction[1::2]
                prediction = uncond + first.cfg * (cond - uncond)
            x = scheduler.step(prediction, t, x, **step_kwargs, return_dict=False)[0]
            ctx.step(index + 1, len(timesteps), x)
    return [
        {"latent": loop.latent.with_(samples=x[i : i + 1], noise=None, rng_state=generators[i].get_state())}
        for i, loop in enumerate(loops)
    ]


def _batchable(loops: list[LoopItem]) -> bool:
    """One image each, no inpainting, and everything but the noise and the prompts shared."""
    first = loops[0]
    first_state = first.latent.noise
    if first_state is None:
        return False
    shape = first.positive.embeds.shape
    for loop in loops:
        latent, state = loop.latent, loop.latent.noise
        if state is None or latent.noise_mask is not None or latent.masked_image is not None:
            return False
        if loop.model is not first.model or loop.model.is_inpainting or loop.cfg != first.cfg:
            return False
        if latent.samples.shape[0] != 1 or latent.samples.shape != first.latent.samples.shape:
            return False
        if state.start_index != first_state.start_index or not _same_schedule(state, first_state):
            return False
        if loop.positive.embeds.shape != shape or loop.negative.embeds.shape != shape or shape[0] != 1:
            return False
    return True


def _same_schedule(a: NoiseState, b: NoiseState) -> bool:
    x, y = a.schedule, b.schedule
    return x is y or _signature(x) == _signature(y)


def _signature(schedule: Schedule) -> tuple:
    return (schedule.sampler, schedule.steps, schedule.scheduler_class, repr(schedule.scheduler_config))
