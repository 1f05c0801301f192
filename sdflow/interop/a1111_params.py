"""A1111's "parameters" text read as a plan of a run: prompts without their `<lora:...>` tags, the
LoRAs, sampler and schedule in sdflow's names, size, seed, clip skip, hires fix and img2img strength.
Every setting sdflow cannot reproduce is a problem (reported together) or, when it changes little,
a note."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, get_args

from sdflow.formats.infotext import A1111_SAMPLERS, Infotext
from sdflow.nodes.ops.samplers import SigmasName, supports_karras

# A1111 sampler name -> sdflow sampler (the entries without a schedule of their own)
SAMPLERS = {name: ours for ours, (name, schedule) in A1111_SAMPLERS.items() if schedule is None}
# A1111 "Schedule type" -> sdflow Scheduler sigmas (those sdflow has are in SigmasName)
SCHEDULES = {
    "Automatic": "default",
    "Karras": "karras",
    "Exponential": "exponential",
    "SGM Uniform": "sgm_uniform",
    "KL Optimal": "kl_optimal",
    "Simple": "simple",
    "Normal": "normal",
    "DDIM": "ddim_uniform",
    "Beta": "beta",
    "Uniform": "uniform",
    "Polyexponential": "polyexponential",
    "Align Your Steps": "align_your_steps",
}
# The schedule A1111 1.9 and later use for "Automatic" (and then write no Schedule type)
AUTOMATIC = {"DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM2": "Karras", "DPM2 a": "Karras"}
AUTOMATIC |= {"DPM++ 2M SDE": "Exponential", "DPM++ 3M SDE": "Exponential"}
# Latent hires upscalers -> LatentUpscale mode; any other upscaler works on pixels
LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (bicubic)": "bicubic", "Latent (nearest)": "nearest"}
LATENT_UPSCALERS |= {"Latent (nearest-exact)": "nearest", "Latent (antialiased)": "bilinear"}
LATENT_UPSCALERS |= {"Latent (bicubic antialiased)": "bicubic"}
PIXEL_FILTERS = {"Nearest": "nearest", "Lanczos": "lanczos", "None": "lanczos"}
USED = {"Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model", "Clip skip"}
USED |= {"Denoising strength", "Emphasis", "Version", "Model hash", "Lora hashes", "TI hashes"}
EXTRA_NET = re.compile(r"<(lora|lyco|hypernet):([^>]*)>")


@dataclass
class Lora:
    """A `<lora:name:te:unet>` tag: the file and its text-encoder and UNet strengths."""

    name: str
    unet: float = 1.0
    te: float = 1.0


@dataclass
class Pass:
    """One sampling pass: its prompts, sampler, sigmas, steps and CFG."""

    prompt: str
    negative: str
    sampler: str
    sigmas: str
    steps: int
    cfg: float


@dataclass
class Hires:
    """The hires fix: the second pass, its size, strength and upscaler (latent mode or pixel filter)."""

    second: Pass
    size: tuple[int, int]
    strength: float
    latent_mode: str | None
    pixel_filter: str


@dataclass
class Plan:
    """The run an A1111 parameters text describes."""

    first: Pass
    seed: int
    size: tuple[int, int]
    model: str | None
    clip_skip: int = 0
    weighting: str = "a1111"
    loras: list[Lora] = field(default_factory=list)
    hires: Hires | None = None
    strength: float | None = None  # img2img
    notes: list[str] = field(default_factory=list)


class _Reader:
    """Reads settings one by one, recording each problem and going on."""

    def __init__(self, info: Infotext) -> None:
        self.settings = info.settings
        self.problems: list[str] = []
        self.notes: list[str] = []

    def number(self, key: str, default: Any, kind: type) -> Any:
        value = self.settings.get(key)
        if value is None:
            return default
        try:
            return kind(float(value)) if kind is int and "." in str(value) else kind(value)
        except ValueError:
            self.problems.append(f"{key}: '{value}' is not a number")
            return default

    def size(self, key: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        value = self.settings.get(key)
        if value is None:
            return default
        match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(value))
        if match is None:
            self.problems.append(f"{key}: '{value}' is not WIDTHxHEIGHT")
            return default
        return int(match[1]), int(match[2])

    def sampler(self, name: str, schedule: str | None, version: int | None) -> tuple[str, str]:
        """(sdflow sampler, sigmas) for an A1111 sampler and schedule type (or an old-style name
        such as 'DPM++ 2M Karras')."""
        for label in SCHEDULES:
            if name.endswith(f" {label}") and name not in SAMPLERS:  # before A1111 1.9
                name, schedule = name.removesuffix(f" {label}"), schedule or label
        if name not in SAMPLERS:
            self.problems.append(
                f"Sampler: '{name}' is not one sdflow has (sdflow maps: {', '.join(SAMPLERS)})"
            )
            return "euler", "default"
        if schedule is None and name in AUTOMATIC:
            if version is not None and version >= 9:
                schedule = AUTOMATIC[name]
            else:
                self.notes.append(
                    f"Sampler '{name}' without a Schedule type: its own spacing is used; A1111 1.9 and later "
                    f"use {AUTOMATIC[name]} then (set the Scheduler's sigmas if the picture came from one)"
                )
        sigmas = SCHEDULES.get(schedule or "Automatic")
        if sigmas is None or sigmas not in get_args(SigmasName):
            have = [label for label, ours in SCHEDULES.items() if ours in get_args(SigmasName)]
            self.problems.append(
                f"Schedule type: '{schedule}' is not one sdflow has (sdflow maps: {', '.join(have)})"
            )
            return SAMPLERS[name], "default"
        if sigmas == "karras" and not supports_karras(SAMPLERS[name]):
            self.problems.append(
                f"Schedule type: Karras with '{name}': diffusers has no Karras sigmas for it"
            )
            return SAMPLERS[name], "default"
        return SAMPLERS[name], sigmas


def plan(info: Infotext, init_image: bool) -> tuple[Plan, list[str]]:
    """The plan of the run ``info`` describes, and the problems that keep sdflow from reproducing it;
    ``init_image``: an init picture is given (img2img)."""
    r = _Reader(info)
    s = info.settings
    version_match = re.search(r"v1\.(\d+)", str(s.get("Version", "")))
    version = int(version_match[1]) if version_match else None
    prompt, loras = extra_networks(info.prompt, r.problems)
    negative, dropped = extra_networks(info.negative, r.problems)
    if dropped:
        r.notes.append(
            "<lora:...> tags in the negative prompt are left out (A1111 applies only the prompt's)"
        )
    sampler, sigmas = r.sampler(str(s.get("Sampler", "Euler")), s.get("Schedule type"), version)
    first = Pass(
        prompt, negative, sampler, sigmas, r.number("Steps", 20, int), r.number("CFG scale", 7.0, float)
    )
    size = r.size("Size", (512, 512)) or (512, 512)
    skip = r.number("Clip skip", 1, int)
    result = Plan(first, r.number("Seed", 0, int), size, s.get("Model"), max(skip - 1, 0), loras=loras)
    if s.get("Model hash"):
        r.notes.append(f"Model hash {s['Model hash']}: the checkpoint is found by its name, not its hash")
    emphasis = s.get("Emphasis", "Original")
    if emphasis != "Original":
        r.notes.append(
            f"Emphasis: {emphasis} is not sdflow's: prompt weights are applied as A1111's 'Original'"
        )
    strength = r.number("Denoising strength", None, float)
    hires_keys = [key for key in s if key.startswith("Hires ")]
    if hires_keys and init_image:
        r.problems.append(
            "the parameters describe a txt2img run with a hires fix: an init picture does not apply"
        )
    elif hires_keys:
        result.hires = _hires(r, result, strength if strength is not None else 0.7, version)
    elif init_image or strength is not None:
        result.strength = strength if strength is not None else 0.75
    ignored = [f"{k}: {v}" for k, v in s.items() if k not in USED and not k.startswith("Hires ")]
    if ignored:
        r.notes.append(f"settings not reproduced: {'; '.join(ignored)}")
    result.notes = r.notes
    return result, r.problems


def _hires(r: _Reader, result: Plan, strength: float, version: int | None) -> Hires:
    s = r.settings
    scale = r.number("Hires upscale", 2.0, float)
    width, height = result.size
    size = r.size("Hires resize", None) or (int(width * scale), int(height * scale))
    size = (size[0] // 8 * 8, size[1] // 8 * 8)
    first = result.first
    sampler, sigmas = first.sampler, first.sigmas
    if "Hires sampler" in s or "Hires schedule type" in s:
        name = str(s.get("Hires sampler", s.get("Sampler", "Euler")))
        sampler, sigmas = r.sampler(name, s.get("Hires schedule type", s.get("Schedule type")), version)
    prompt, loras = extra_networks(str(s.get("Hires prompt", first.prompt)), r.problems)
    if loras:
        r.notes.append("<lora:...> tags in the hires prompt are left out (the first pass's LoRAs apply)")
    steps = r.number("Hires steps", 0, int) or first.steps
    cfg = r.number("Hires CFG Scale", first.cfg, float)
    second = Pass(prompt, str(s.get("Hires negative prompt", first.negative)), sampler, sigmas, steps, cfg)
    upscaler = str(s.get("Hires upscaler", "Latent"))
    latent_mode = LATENT_UPSCALERS.get(upscaler)
    if upscaler.startswith("Latent") and latent_mode is None:
        r.problems.append(
            f"Hires upscaler: '{upscaler}' is not one sdflow has ({', '.join(LATENT_UPSCALERS)})"
        )
    elif "antialiased" in upscaler or "nearest-exact" in upscaler:
        r.notes.append(f"Hires upscaler '{upscaler}': the latent is resized with mode '{latent_mode}'")
    elif latent_mode is None and upscaler not in PIXEL_FILTERS:
        r.notes.append(
            f"Hires upscaler '{upscaler}' (an upscaling model) is not run: the image is resized with lanczos"
        )
    return Hires(second, size, strength, latent_mode, PIXEL_FILTERS.get(upscaler, "lanczos"))


def extra_networks(text: str, problems: list[str]) -> tuple[str, list[Lora]]:
    """``text`` without its `<lora:...>` / `<lyco:...>` tags, and the LoRAs they name
    (`<lora:name>`, `<lora:name:w>`, `<lora:name:te:unet>`, `<lora:name:te=w:unet=w>`)."""
    loras = []
    for kind, body in EXTRA_NET.findall(text):
        if kind == "hypernet":
            problems.append(f"<hypernet:{body}>: sdflow has no hypernetworks")
            continue
        name, *weights = body.split(":")
        named = dict(w.split("=", 1) for w in weights if "=" in w)
        positional = [w for w in weights if "=" not in w]
        try:
            te = float(named.get("te", positional[0] if positional else 1.0))
            unet = float(named.get("unet", positional[1] if len(positional) > 1 else te))
        except ValueError:
            problems.append(f"<{kind}:{body}>: the weights are not numbers")
            continue
        loras.append(Lora(name.strip(), unet, te))
    return EXTRA_NET.sub("", text), loras
