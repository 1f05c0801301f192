"""Handlers for ComfyUI's samplers: KSampler and KSamplerAdvanced become a Scheduler, an AddNoise
and a DenoiseLoop; a split run's passes become a stopped loop and a resumed one."""

from __future__ import annotations

from typing import Any

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import CONTROL, handler
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.ops.comfy_tables import COMFY_NAMES
from sdflow.nodes.ops.samplers import SAMPLERS as SAMPLER_CLASSES
from sdflow.nodes.ops.samplers import supports_karras
from sdflow.nodes.ops.sigma_schedules import SCHEDULES, refusal

# ComfyUI sampler -> sdflow sampler (the _gpu variants only draw their noise on the GPU).
SAMPLERS = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "heun": "heun",
    "dpmpp_2m": "dpmpp_2m",
    "ddim": "ddim",
    "ddpm": "ddpm",
    "uni_pc": "unipc",
    "lms": "lms",
    "uni_pc_bh2": "uni_pc_bh2",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu": "dpmpp_2m_sde",
    "dpmpp_3m_sde": "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
    "dpmpp_sde": "dpmpp_sde",
    "dpmpp_sde_gpu": "dpmpp_sde",
    "dpm_2": "dpm_2",
    "dpm_2_ancestral": "dpm_2_ancestral",
    "deis": "deis",
    "lcm": "lcm",
}
# ComfyUI scheduler -> the Scheduler's sigmas: `normal` is the sampler's own spacing, `karras`
# diffusers' Karras sigmas; the others are ComfyUI's tables, computed as ComfyUI does.
SCHEDULERS = {name: name for name in SCHEDULES if name != "sd_turbo"} | {"normal": "default"}


def comfy_mode(sampler: str) -> bool:
    """Whether the importer runs ComfyUI's ``sampler`` in comfy mode (ComfyUI's own sampling): every
    sampler comfy mode has; the others run in diffusers mode."""
    return SAMPLERS.get(sampler) in COMFY_NAMES


def sampler_fields(c: Converter, node: ComfyNode) -> dict[str, str]:
    """The Scheduler's sampler, sigmas and mode for the node's (sampler_name, scheduler) pair: comfy
    mode where sdflow has ComfyUI's sampler, diffusers mode otherwise. Each name sdflow cannot map,
    and each pair diffusers cannot run, is refused, naming the choices."""
    sampler, scheduler = str(c.const(node, "sampler_name")), str(c.const(node, "scheduler"))
    ours = SAMPLERS.get(sampler)
    fields = {"sampler": ours or "euler"}
    if ours is None:
        c.refuse(node, f"unknown sampler_name '{sampler}' (sdflow maps: {', '.join(SAMPLERS)})")
    if comfy_mode(sampler) and scheduler in SCHEDULERS:
        return {**fields, "sigmas": scheduler, "mode": "comfy"}
    sigmas = SCHEDULERS.get(scheduler)
    if sigmas is None:
        c.refuse(node, f"unknown scheduler '{scheduler}' (sdflow maps: {', '.join(SCHEDULERS)})")
    elif sigmas == "karras" and ours is not None:
        if supports_karras(ours):
            fields["sigmas"] = "karras"
        else:
            karras = ", ".join(name for name, mapped in SAMPLERS.items() if supports_karras(mapped))
            c.refuse(
                node,
                f"scheduler 'karras' is supported with {karras} only, not '{sampler}' "
                "(diffusers has no Karras sigmas for it)",
            )
    elif sigmas != "default" and ours is not None:
        problem = refusal(ours, SAMPLER_CLASSES[ours][0], sigmas)
        if problem:
            c.refuse(node, f"scheduler '{scheduler}': {problem}")
        fields["sigmas"] = sigmas
    return fields


def partial_schedule(steps: int, denoise: float) -> tuple[int, float]:
    """(schedule steps, strength) running ``steps`` steps at ``denoise``, as ComfyUI does: it makes
    int(steps / denoise) steps and runs the last ``steps`` of them."""
    if denoise >= 1.0:
        return steps, 1.0
    total = int(steps / denoise)
    strength = round(steps / total, 6)
    while int(total * strength) < steps:  # sdflow runs int(total * strength) steps
        strength = round(strength + 1e-6, 6)
    return total, strength


def sampling(
    c: Converter,
    node: ComfyNode,
    seed: int,
    strength_steps: tuple[int, float],
    resume_at: int | None = None,
    end_step: int | None = None,
    start_at: int | None = None,
) -> list[Port]:
    """Scheduler, AddNoise and DenoiseLoop; ``resume_at`` continues a stopped latent at that step
    without noise, ``end_step`` stops after that step with the leftover noise."""
    model = c.port(node, "model")
    sampler = sampler_fields(c, node)
    total, strength = strength_steps
    schedule = c.add("schedule", node.id, "Scheduler", model=model.link, **sampler, steps=total)
    noise_fields: dict[str, Any] = {"latent": c.port(node, "latent_image").link, "schedule": Link(schedule)}
    if not 0 <= seed <= MAX_SEED:
        c.refuse(node, f"seed {seed} is outside sdflow's range 0..{MAX_SEED}")
    noise_fields["seed"] = seed
    if strength < 1.0:
        noise_fields["strength"] = strength
    if resume_at is not None:
        noise_fields["start_at"] = resume_at
    if sampler.get("mode") == "comfy" and strength < 1.0 and start_at is not None:
        noise_fields.pop("strength")
        noise_fields["start_at"] = start_at  # comfy mode noises to that step's sigma, as ComfyUI
    noised = c.add("noise", node.id, "AddNoise", **noise_fields)
    loop_fields: dict[str, Any] = {"end_at": end_step} if end_step is not None else {}
    denoised = c.add(
        "sample",
        node.id,
        "DenoiseLoop",
        model=model.link,
        positive=c.port(node, "positive").link,
        negative=c.port(node, "negative").link,
        latent=Link(noised),
        cfg=c.number(node, "cfg", 8.0, float),
        **loop_fields,
    )
    return [Port(Link(denoised, "latent"), stopped=end_step is not None)]


@handler("KSampler", widgets=("seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"))
def ksampler(c: Converter, node: ComfyNode) -> list[Port]:
    """A whole run, or a partial one (``denoise`` < 1) with ComfyUI's step count."""
    steps, denoise = c.number(node, "steps", 20, int), c.number(node, "denoise", 1.0, float)
    if not 0.0 < denoise <= 1.0:
        c.refuse(node, f"denoise must be in (0, 1], got {denoise}")
        denoise = 1.0
    return sampling(c, node, c.number(node, "seed", 0, int), partial_schedule(max(steps, 1), denoise))


@handler(
    "KSamplerAdvanced",
    widgets=(
        "add_noise",
        "noise_seed",
        CONTROL,
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "start_at_step",
        "end_at_step",
        "return_with_leftover_noise",
    ),
)
def ksampler_advanced(c: Converter, node: ComfyNode) -> list[Port]:
    """A whole run, or one pass of a split: stopping after end_at_step with the leftover noise
    (DenoiseLoop end_at), continuing such a latent at start_at_step (AddNoise start_at)."""
    steps = c.number(node, "steps", 20, int)
    start, end = c.number(node, "start_at_step", 0, int), c.number(node, "end_at_step", 10000, int)
    add_noise = c.const(node, "add_noise", "enable") == "enable"
    if not 0 <= start < steps:
        c.refuse(node, f"start_at_step {start} must be below steps {steps}")
        start = 0
    if end <= start:
        c.refuse(node, f"end_at_step {end} must be above start_at_step {start}")
        end = steps
    stops = end < steps
    if stops and c.const(node, "return_with_leftover_noise", "disable") != "enable":
        c.refuse(
            node,
            f"end_at_step {end} < steps {steps} with return_with_leftover_noise 'disable' (ComfyUI then "
            "jumps to a clean latent on the last step) is not supported: enable return_with_leftover_noise",
        )
    latent = c.port(node, "latent_image")
    if not add_noise and not latent.stopped and not latent.unknown:
        c.refuse(
            node,
            "add_noise 'disable' is supported only on the latent of a KSamplerAdvanced that returns "
            "with leftover noise (a split run's second pass)",
        )
    if add_noise and latent.stopped:
        c.refuse(
            node,
            "add_noise 'enable' on a latent returned with leftover noise (noise added twice) is not "
            "supported: disable add_noise to continue it",
        )
    seed, end_step = c.number(node, "noise_seed", 0, int), end if stops else None
    if not add_noise:
        return sampling(c, node, seed, (steps, 1.0), resume_at=start, end_step=end_step)
    strength = 1.0 if start == 0 else round((steps - start) / steps, 6)
    return sampling(c, node, seed, (steps, strength), end_step=end_step, start_at=start or None)
