"""Recognise a plain txt2img / img2img graph behind an output node, and gather what A1111's
"parameters" text says about it (prompt, negative prompt, sampler, steps, CFG, seed, model...).

Plain means: the saved image is a VAEDecode of a DenoiseLoop whose prompts are CLIPEncodes, whose
latent is an AddNoise on an EmptyLatent (txt2img) or on an unmasked VAEEncode of a LoadImage
(img2img), with the model straight from a LoadCheckpoint. Anything else (inpainting, a hires fix,
LoRAs, resizing after decoding) describes no A1111 run faithfully, and gets no text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from sdflow.graphs.model import Link
from sdflow.nodes.ops.split import END_ALIASES, START_ALIASES, chosen


@dataclass(frozen=True)
class Planned:
    """A node as the runner plans it: type, constants (inputs substituted, defaults filled), links."""

    type: str
    constants: Mapping[str, Any]
    links: Mapping[str, Link]


def generation(nodes: Mapping[str, Planned], output: str) -> dict[str, Any] | None:
    """The settings of the run ``output`` saves (all but the size, which the saved image has), or
    None when the graph behind it is not a plain txt2img / img2img."""
    try:
        return _trace(nodes, output)
    except _NotPlain:
        return None


class _NotPlain(Exception):
    pass


def _follow(nodes: Mapping[str, Planned], node: Planned, field: str, *types: str) -> Planned:
    link = node.links.get(field)
    target = nodes.get(link.node) if link is not None else None
    if target is None or target.type not in types:
        raise _NotPlain
    return target


def _trace(nodes: Mapping[str, Planned], output: str) -> dict[str, Any]:
    save = nodes[output]
    decoded = _follow(nodes, save, "image", "VAEDecode")
    loop = _follow(nodes, decoded, "latent", "DenoiseLoop")
    positive, negative, controls = _prompts(nodes, loop)
    noised = _follow(nodes, loop, "latent", "AddNoise")
    schedule = _follow(nodes, noised, "schedule", "Scheduler")
    checkpoint = _follow(nodes, loop, "model", "LoadCheckpoint")
    if _follow(nodes, schedule, "model", "LoadCheckpoint") is not checkpoint:
        raise _NotPlain
    start = _follow(nodes, noised, "latent", "EmptyLatent", "VAEEncode")
    end = chosen(loop.constants, "end_at", END_ALIASES)[0]
    if end is not None or chosen(noised.constants, "start_at", START_ALIASES)[0] is not None:
        raise _NotPlain  # part of a split run: A1111 has no words for it
    seed, strength = noised.constants.get("seed"), None
    if start.type == "VAEEncode":
        if "mask" in start.links:
            raise _NotPlain
        _follow(nodes, start, "image", "LoadImage")
        strength = noised.constants.get("strength")
        if seed is None:  # the noise continues VAEEncode's random stream: its seed is the run's
            seed = start.constants.get("seed")
    texts = positive.constants.get("text", ""), negative.constants.get("text", "")
    if not all(isinstance(text, str) for text in texts):  # a batch of prompts: no one text describes it
        raise _NotPlain
    found: dict[str, Any] = {"controlnets": controls} if controls else {}
    return found | {
        "prompt": texts[0],
        "negative": texts[1],
        "steps": schedule.constants.get("steps"),
        "sampler": schedule.constants.get("sampler"),
        "sigmas": schedule.constants.get("sigmas", "default"),
        "cfg": loop.constants.get("cfg"),
        "seed": seed,
        "model": model_name(str(checkpoint.constants.get("checkpoint", ""))),
        "strength": strength,
        "clip_skip": positive.constants.get("clip_skip", 0) or 0,
    }


def _prompts(nodes: Mapping[str, Planned], loop: Planned) -> tuple[Planned, Planned, list[str]]:
    """The loop's two CLIPEncodes, through a chain of ApplyControlNet nodes (each on both sides),
    and A1111's text of each control unit, in the order they were applied."""
    positive, negative = loop, loop
    units: list[str] = []
    while True:
        positive = _follow(nodes, positive, "positive", "CLIPEncode", "ApplyControlNet")
        negative = _follow(nodes, negative, "negative", "CLIPEncode", "ApplyControlNet")
        if positive.type == "CLIPEncode" and negative.type == "CLIPEncode":
            return positive, negative, units[::-1]
        if positive is not negative:
            raise _NotPlain
        units.append(_unit(nodes, positive))


_MODULES = {"Canny": "canny", "ImageInvert": "invert", "LoadImage": "none"}


def _unit(nodes: Mapping[str, Planned], apply: Planned) -> str:
    """'Module: canny, Model: control_sd15_canny, Weight: 1.0, ...' as A1111's ControlNet writes it."""
    loader = _follow(nodes, apply, "control_net", "LoadControlNet")
    image = _follow(nodes, apply, "image", *_MODULES)
    parts = {
        "Module": _MODULES[image.type],
        "Model": model_name(str(loader.constants.get("file", ""))),
        "Weight": apply.constants.get("strength", 1.0),
    }
    if image.type == "Canny":
        parts |= {"Threshold A": image.constants.get("low"), "Threshold B": image.constants.get("high")}
    parts |= {
        "Guidance Start": apply.constants.get("start_percent", 0.0),
        "Guidance End": apply.constants.get("end_percent", 1.0),
    }
    return ", ".join(f"{key}: {value}" for key, value in parts.items())


def model_name(checkpoint: str) -> str:
    """How A1111 names a model: the file name without its suffix ('builtin:shapes' -> 'shapes')."""
    name = checkpoint.removeprefix("builtin:").rstrip("/\\")
    return PurePath(name).stem if PurePath(name).suffix else PurePath(name).name
