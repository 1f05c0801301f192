"""The ComfyUI reference runs of tests/data/comfy_reference.npz: their settings as ComfyUI API
workflows on the built-in shapes checkpoint, and running them through `sdflow import comfy`.

tests/data/README_comfy_reference.md says how the pictures were recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from sdflow.formats.comfy_json import read
from sdflow.interop.comfy import convert

DATA = Path(__file__).resolve().parent / "data" / "comfy_reference.npz"
CHECKPOINT = "builtin:shapes"
PROMPT, NEGATIVE = "a red circle on a blue background", ""
SECOND = "a green triangle on a white background"  # the area / combined prompt
STEPS, CFG, SEED, SIZE = 6, 4.0, 42, 64
SAMPLERS = (
    "euler",
    "euler_ancestral",
    "heun",
    "dpmpp_2m",
    "dpmpp_sde",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "lcm",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
)
SCHEDULES = ("normal", "karras", "exponential", "sgm_uniform", "simple")
INIT = "euler/karras"  # the img2img cases start from this grid picture
INIT_FILE = "init.png"  # the INIT picture; with a transparent square (the inpainting mask) as well:
HOLED_FILE = "holed.png"
HOLE = slice(SIZE // 4, 3 * SIZE // 4)


@dataclass(frozen=True)
class Case:
    """One ComfyUI run: KSampler (txt2img, or img2img at ``denoise`` < 1 from the INIT picture), two
    KSamplerAdvanced passes split after step ``split``, or (``custom``) SamplerCustom with
    KSamplerSelect and BasicScheduler."""

    sampler: str
    scheduler: str
    cfg: float = CFG
    denoise: float = 1.0
    split: int | None = None
    custom: bool = False
    inpaint: bool = False
    # the positive ConditioningCombine'd with SECOND on (x, y, width, height) pixels at strength (or
    # on the whole picture: None)
    area: tuple[int, int, int, int, float] | None = None
    combine: bool = False

    @property
    def name(self) -> str:
        name = f"{self.sampler}/{self.scheduler}"
        if self.denoise < 1.0:
            name = f"img2img-{self.denoise}/{name}"
        if self.split is not None:
            name = f"split-{self.split}/{name}"
        if self.cfg != CFG:
            name = f"cfg-{self.cfg}/{name}"
        if self.custom:
            name = f"custom/{name}"
        if self.inpaint:
            name = f"inpaint/{name}"
        if self.area is not None:
            name = "area-" + "-".join(str(v) for v in self.area) + f"/{name}"
        elif self.combine:
            name = f"combine/{name}"
        return name

    @property
    def kind(self) -> str:
        if self.custom:
            return "custom"
        if self.inpaint:
            return "inpaint"
        return "split" if self.split is not None else "img2img" if self.denoise < 1.0 else "txt2img"


GRID = tuple(Case(sampler, schedule) for sampler in SAMPLERS for schedule in SCHEDULES)
EXTRAS = (
    Case("euler_ancestral", "normal", denoise=0.6),
    Case("uni_pc", "karras", denoise=0.6),
    Case("dpmpp_2m_sde", "exponential", denoise=0.6),
    Case("dpmpp_2m", "karras", cfg=1.0),
    Case("euler", "normal", cfg=0.5),
    Case("dpmpp_2m", "karras", split=3),
    Case("euler_ancestral", "simple", split=2),
    Case("dpmpp_2m_sde", "karras", custom=True),
    Case("uni_pc", "normal", custom=True),
    Case("euler_ancestral", "exponential", custom=True),
    Case("ddim", "normal", inpaint=True),
    Case("dpmpp_2m", "karras", inpaint=True),
    Case("uni_pc", "simple", inpaint=True),
    Case("euler", "normal", area=(32, 0, 32, 32, 1.0)),
    Case("dpmpp_2m", "karras", area=(0, 0, 32, 64, 0.8)),
    Case("euler_ancestral", "normal", area=(16, 16, 32, 32, 1.0)),
    Case("heun", "simple", combine=True),
    Case("dpm_2", "normal"),
    Case("dpm_2", "karras"),
    Case("dpm_2_ancestral", "karras"),
    Case("dpm_2_ancestral", "simple"),
    Case("lms", "karras"),
    Case("lms", "exponential"),
    Case("ddpm", "normal"),
    Case("ddpm", "karras"),
)
CASES = GRID + EXTRAS


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def api_document(case: Case) -> dict[str, Any]:
    """The ComfyUI API workflow of ``case`` (the img2img ones load INIT_FILE)."""
    document = {
        "1": _node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT),
        "2": _node("CLIPTextEncode", text=PROMPT, clip=["1", 1]),
        "3": _node("CLIPTextEncode", text=NEGATIVE, clip=["1", 1]),
        "4": _node("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1),
        "8": _node("VAEDecode", samples=["5", 0], vae=["1", 2]),
    }
    common = {
        "cfg": case.cfg,
        "sampler_name": case.sampler,
        "scheduler": case.scheduler,
        "model": ["1", 0],
        "positive": ["2", 0],
        "negative": ["3", 0],
    }
    if case.kind in ("img2img", "inpaint"):
        document["10"] = _node("LoadImage", image=INIT_FILE if case.kind == "img2img" else HOLED_FILE)
        document["11"] = _node("VAEEncode", pixels=["10", 0], vae=["1", 2])
    if case.kind == "inpaint":
        document["14"] = _node("SetLatentNoiseMask", samples=["11", 0], mask=["10", 1])
    if case.area is not None or case.combine:
        document["20"] = _node("CLIPTextEncode", text=SECOND, clip=["1", 1])
        second = ["20", 0]
        if case.area is not None:
            x, y, width, height, strength = case.area
            area = {"width": width, "height": height, "x": x, "y": y, "strength": strength}
            document["21"] = _node("ConditioningSetArea", conditioning=["20", 0], **area)
            second = ["21", 0]
        document["22"] = _node("ConditioningCombine", conditioning_1=["2", 0], conditioning_2=second)
        common["positive"] = ["22", 0]
    if case.kind == "custom":
        document["12"] = _node("KSamplerSelect", sampler_name=case.sampler)
        document["13"] = _node(
            "BasicScheduler", model=["1", 0], scheduler=case.scheduler, steps=STEPS, denoise=1.0
        )
        document["5"] = _node(
            "SamplerCustom",
            model=["1", 0],
            add_noise=True,
            noise_seed=SEED,
            cfg=case.cfg,
            positive=["2", 0],
            negative=["3", 0],
            sampler=["12", 0],
            sigmas=["13", 0],
            latent_image=["4", 0],
        )
    elif case.kind == "split":
        split = {"noise_seed": SEED, "steps": STEPS, **common}
        document["6"] = _node(
            "KSamplerAdvanced",
            add_noise="enable",
            start_at_step=0,
            end_at_step=case.split,
            return_with_leftover_noise="enable",
            latent_image=["4", 0],
            **split,
        )
        document["5"] = _node(
            "KSamplerAdvanced",
            add_noise="disable",
            start_at_step=case.split,
            end_at_step=10000,
            return_with_leftover_noise="disable",
            latent_image=["6", 0],
            **split,
        )
    else:
        latent = {"img2img": ["11", 0], "inpaint": ["14", 0]}.get(case.kind, ["4", 0])
        document["5"] = _node(
            "KSampler", seed=SEED, steps=STEPS, denoise=case.denoise, latent_image=latent, **common
        )
    return document


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(batch, 3, h, w) pixels in [0, 1] as 8-bit (batch, h, w, 3), rounded as SaveImage rounds."""
    return (pixels.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)


def write_init(folder: Path, picture: np.ndarray) -> None:
    """INIT_FILE, and HOLED_FILE: the same with its HOLE square transparent (LoadImage's mask)."""
    PILImage.fromarray(picture).save(folder / INIT_FILE)
    alpha = np.full(picture.shape[:2], 255, dtype=np.uint8)
    alpha[HOLE, HOLE] = 0
    PILImage.fromarray(np.dstack([picture, alpha])).save(folder / HOLED_FILE)


def imported(case: Case, folder: Path) -> Any:
    """``case``'s workflow as `sdflow import comfy` writes it (written to ``folder`` first)."""
    path = folder / "workflow_api.json"
    path.write_text(json.dumps(api_document(case)))
    return convert(read(path), str(path), str(folder)).workflow


def decoded_id(workflow: Any) -> str:
    return next(node_id for node_id, spec in workflow.nodes.items() if spec.type == "VAEDecode")
