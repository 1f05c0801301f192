"""DenoiseLoop in comfy mode: ComfyUI's sampler (``comfy_sampling``) over the schedule's sigma table,
the UNet (the loop's own predictor: text, controls, image prompts, areas) wrapped as ComfyUI wraps it
(``comfy_model``), a noise mask blended at every model call."""

from __future__ import annotations

from typing import Any

import torch

from sdflow.nodes.ops import comfy_model, comfy_sampling
from sdflow.nodes.ops.guidance import Guidance
from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.split import END_ALIASES, chosen
from sdflow.nodes.types import Cut, Latent, NoiseState


def sample(loop: Any, ctx: Any, guide: Guidance, state: NoiseState) -> tuple[Latent, torch.Tensor]:
    """Comfy mode: ComfyUI's sampler over the schedule's sigma table, from the step AddNoise chose
    to the end (or to end_at, a step), the UNet wrapped as ComfyUI wraps it (see comfy_model)."""
    schedule = state.schedule
    table = schedule.comfy_table("cpu")
    steps = len(table) - 1
    end, end_field = chosen(loop.__dict__, "end_at", END_ALIASES)
    if isinstance(end, float):
        raise ctx.error("in comfy mode end_at is a step (an int), not a fraction", end_field)
    last, cut = steps, None
    if end is not None:
        if end <= state.start_index:
            raise ctx.error(
                f"{end_field} {end} is not after the step this latent starts at ({state.start_index}): "
                "nothing would be denoised",
                end_field,
            )
        if end < steps:
            last, cut = end, Cut(end)
    device, dtype = placement(loop.model.unet)
    x = loop.latent.samples.to(device, torch.float32)
    sigmas = table[state.start_index : last + 1].to(device)
    predict = loop.predictor(ctx, guide, x.to(dtype), steps - state.start_index)
    mask = None
    if loop.latent.noise_mask is not None:  # ComfyUI blends with the mask for every model
        mask = loop.checked_mask(x, ctx).to(device, torch.float32)
    seed = state.seed if state.seed is not None else 0
    run = len(sigmas) - 1
    guided_count = round(loop.cfg_end * run) if guide.guiding else 0
    model = comfy_model.Wrapped(
        predict,
        guide,
        schedule.scheduler_config,
        dtype,
        guided_count,
        mask=mask,
        clean=state.clean.to(device, torch.float32),
        noise=comfy_sampling.inpaint_noise(schedule.sampler, state.noise.to(device, torch.float32), seed),
    )
    last_denoised = [x]

    def progress(index: int, x: torch.Tensor, denoised: torch.Tensor) -> None:
        model.index, last_denoised[0] = index + 1, denoised
        ctx.step(index + 1, run, x)

    with torch.inference_mode():
        if run > 0:
            noises = comfy_sampling.Noises(x, seed)
            x = comfy_sampling.RUNS[schedule.sampler](model, x, sigmas, noises, progress)
    latent = loop.latent.with_(samples=x, noise=state if cut is not None else None, cut=cut)
    return latent, last_denoised[0]
