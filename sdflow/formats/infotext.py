"""A1111's "parameters" text ("infotext"): how pictures tell model-sharing sites and A1111 tools the
prompt and settings they were made with. Writing it, and reading it back, in A1111's exact format:

    a red circle on a blue background
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4.0, Seed: 42, Size: 64x64, Model: shapes

The settings line lists ``Key: value`` pairs joined by ", "; a value holding a comma, colon or
newline is written as a JSON string. The negative prompt line is left out when it is empty.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

INFOTEXT_KEY = "parameters"  # the PNG text chunk A1111 writes and reads
# sdflow sampler -> (A1111 sampler name, A1111 schedule type or None)
A1111_SAMPLERS: dict[str, tuple[str, str | None]] = {
    "ddim": ("DDIM", None),
    "ddpm": ("DDPM", None),
    "pndm": ("PLMS", None),
    "lms": ("LMS", None),
    "euler": ("Euler", None),
    "euler_ancestral": ("Euler a", None),
    "heun": ("Heun", None),
    "dpmpp_2m": ("DPM++ 2M", None),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "unipc": ("UniPC", None),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", None),
    "dpmpp_3m_sde": ("DPM++ 3M SDE", None),
    "dpmpp_sde": ("DPM++ SDE", None),
    "dpm_2": ("DPM2", None),
    "dpm_2_ancestral": ("DPM2 a", None),
    "deis": ("DEIS", None),
    "lcm": ("LCM", None),
}
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass
class Infotext:
    """A picture's prompt, negative prompt and settings (in A1111's order and spelling)."""

    prompt: str
    negative: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def quote(value: Any) -> str:
    """A value as A1111 writes it: as is, or as a JSON string when it holds ',', ':' or a newline."""
    text = str(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def format_infotext(info: Infotext) -> str:
    """The "parameters" text of a picture."""
    settings = ", ".join(
        key if key == value else f"{key}: {quote(value)}"
        for key, value in info.settings.items()
        if value is not None
    )
    negative = f"\nNegative prompt: {info.negative}" if info.negative else ""
    return f"{info.prompt}{negative}\n{settings}".strip()


def parse_infotext(text: str) -> Infotext:
    """Read a "parameters" text back: prompt lines, the negative prompt, then the settings line."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < 3:  # no settings line: all of it is prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].strip()
        (negative if in_negative else prompt).append(line)
    settings: dict[str, Any] = {}
    for key, value in _PAIR.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        settings[key.strip()] = value
    return Infotext("\n".join(prompt), "\n".join(negative), settings)


def settings(
    steps: int,
    sampler: str,
    cfg: float,
    seed: int | None,
    size: tuple[int, int],
    model: str | None = None,
    strength: float | None = None,
    clip_skip: int = 0,
    sigmas: str = "default",
    controlnets: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """The settings line of an sdflow txt2img / img2img run, keyed and ordered as A1111 writes them;
    ``clip_skip`` is sdflow's (0 = last layer), written as A1111's (2 = penultimate); ``controlnets``
    each unit's text ("Module: canny, Model: ..., Weight: 1.0"), written as "ControlNet 0: ..."."""
    name, schedule = A1111_SAMPLERS.get(sampler, (sampler, None))
    if sigmas == "karras":
        schedule = "Karras"
    return {
        "Steps": steps,
        "Sampler": name,
        "Schedule type": schedule,
        "CFG scale": cfg,
        "Seed": seed,
        "Size": f"{size[0]}x{size[1]}",
        "Model": model,
        "Denoising strength": strength,
        "Clip skip": clip_skip + 1 if clip_skip else None,
    } | {f"ControlNet {index}": unit for index, unit in enumerate(controlnets)}
