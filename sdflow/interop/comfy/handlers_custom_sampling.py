"""Handlers for ComfyUI's custom sampling nodes, each onto the sdflow node of the same name and
fields: schedulers give Sigmas, KSamplerSelect a Sampler, RandomNoise / DisableNoise a Noise, the
guiders a Guider, and SamplerCustom(Advanced) run them (their outputs: latent, denoised)."""

from __future__ import annotations

import typing

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.handlers_sampling import SAMPLERS, comfy_mode
from sdflow.interop.comfy.handlers_utilities import same_named
from sdflow.interop.comfy.registry import CONTROL, handler
from sdflow.nodes.library.basic_scheduler import ScheduleName
from sdflow.nodes.library.dual_cfg_guider import DualCFGGuider

SAMPLED = ("latent", "denoised")  # SamplerCustom(Advanced)'s output and denoised_output
TABLES = typing.get_args(ScheduleName)
STYLES = typing.get_args(DualCFGGuider.model_fields["style"].annotation)


def choice(c: Converter, node: ComfyNode, name: str, choices: tuple[str, ...], default: str) -> str:
    """Input ``name`` as one of ``choices`` (refused, naming them, when it is none)."""
    value = str(c.const(node, name, default))
    if value not in choices:
        c.refuse(node, f"unknown {name} '{value}' (sdflow maps: {', '.join(choices)})")
        return default
    return value


@handler("KSamplerSelect", widgets=("sampler_name",))
def k_sampler_select(c: Converter, node: ComfyNode) -> list[Port]:
    """KSamplerSelect with the sampler's sdflow name, in comfy mode where sdflow has ComfyUI's sampler."""
    name = choice(c, node, "sampler_name", tuple(SAMPLERS), "euler")
    mode = {"mode": "comfy"} if comfy_mode(name) else {}
    added = c.add("sampler", node.id, "KSamplerSelect", sampler_name=SAMPLERS[name], **mode)
    return [Port(Link(added, "sampler"))]


@handler("BasicScheduler", widgets=("scheduler", "steps", "denoise"))
def basic_scheduler(c: Converter, node: ComfyNode) -> list[Port]:
    scheduler = choice(c, node, "scheduler", TABLES, "normal")
    numbers = {"steps": (20, int), "denoise": (1.0, float)}
    return same_named(c, node, ("model",), numbers, ("sigmas",), scheduler=scheduler)


@handler("KarrasScheduler", widgets=("steps", "sigma_max", "sigma_min", "rho"))
def karras_scheduler(c: Converter, node: ComfyNode) -> list[Port]:
    numbers = {"steps": (20, int), "sigma_max": (14.614642, float), "sigma_min": (0.0291675, float)}
    return same_named(c, node, (), {**numbers, "rho": (7.0, float)}, ("sigmas",))


@handler("ExponentialScheduler", widgets=("steps", "sigma_max", "sigma_min"))
def exponential_scheduler(c: Converter, node: ComfyNode) -> list[Port]:
    numbers = {"steps": (20, int), "sigma_max": (14.614642, float), "sigma_min": (0.0291675, float)}
    return same_named(c, node, (), numbers, ("sigmas",))


@handler("SDTurboScheduler", widgets=("steps", "denoise"))
def sd_turbo_scheduler(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model",), {"steps": (1, int), "denoise": (1.0, float)}, ("sigmas",))


@handler("SplitSigmas", widgets=("step",))
def split_sigmas(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("sigmas",), {"step": (0, int)}, ("high", "low"))


@handler("RandomNoise", widgets=("noise_seed", CONTROL))
def random_noise(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, (), {"noise_seed": (0, int)}, ("noise",))


@handler("DisableNoise", widgets=())
def disable_noise(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, (), {}, ("noise",))


@handler("BasicGuider", widgets=())
def basic_guider(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model", "conditioning"), {}, ("guider",))


@handler("CFGGuider", widgets=("cfg",))
def cfg_guider(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model", "positive", "negative"), {"cfg": (8.0, float)}, ("guider",))


@handler("DualCFGGuider", widgets=("cfg_conds", "cfg_cond2_negative", "style"))
def dual_cfg_guider(c: Converter, node: ComfyNode) -> list[Port]:
    """DualCFGGuider; files from before ComfyUI added ``style`` are the regular style."""
    numbers = {"cfg_conds": (8.0, float), "cfg_cond2_negative": (8.0, float)}
    style = choice(c, node, "style", STYLES, "regular")
    links = ("model", "cond1", "cond2", "negative")
    return same_named(c, node, links, numbers, ("guider",), style=style)


@handler("SamplerCustom", widgets=("add_noise", "noise_seed", CONTROL, "cfg"))
def sampler_custom(c: Converter, node: ComfyNode) -> list[Port]:
    links = ("model", "positive", "negative", "sampler", "sigmas", "latent_image")
    numbers = {"add_noise": (True, bool), "noise_seed": (0, int), "cfg": (8.0, float)}
    return same_named(c, node, links, numbers, SAMPLED)


@handler("SamplerCustomAdvanced", widgets=())
def sampler_custom_advanced(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("noise", "guider", "sampler", "sigmas", "latent_image"), {}, SAMPLED)
