"""SDXL graphs reproduce diffusers' SDXL pipelines on the tiny random SDXL checkpoints: txt2img
(StableDiffusionXLPipeline), img2img (XLImg2Img), inpainting (XLInpaint) and the base + refiner
ensemble (denoising_end / denoising_start), for several samplers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import (
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image as PILImage
from references import pipeline_images
from workflows import DECODE, LOOP, SCHEDULE, decoded_pixels, img2img, max_diff, txt2img
from workflows import IMG2IMG as IMG2IMG_NODES

from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "sdflow" / "builtin" / "tiny-sdxl"
REFINER = ROOT / "sdflow" / "builtin" / "tiny-sdxl-refiner"
PICTURE = ROOT / "examples" / "inputs" / "shapes.png"
MASK = ROOT / "examples" / "inputs" / "shapes_mask.png"
TOLERANCE = 1e-4
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry"
SIZE = 64
STEPS = 4
CFG = 5.0
SAMPLER_CASES = ["euler", "dpmpp_2m", "ddim", "euler_ancestral"]

INPUTS = {"seed": 0, "sampler": "euler", "strength": 1.0, "end": 1.0}
COMMON: dict[str, Any] = {
    "ckpt": {"checkpoint": '"builtin:tiny-sdxl"'},
    "positive": {"text": f'"{PROMPT}"'},
    "negative": {"text": f'"{NEGATIVE}"'},
    "schedule": {"steps": STEPS},
    "denoised": {"cfg": CFG, "denoise_end": "!input end"},
}

TXT2IMG = txt2img(INPUTS, flow=True, **COMMON)

IMG2IMG = img2img(
    INPUTS,
    flow=True,
    **COMMON,
    picture={"path": f'"{PICTURE}"'},
    mask={"type": "LoadMask", "path": f'"{MASK}"'},
    masked={**IMG2IMG_NODES["encoded"], "mask": "!link mask"},
    inpaint_noised={**IMG2IMG_NODES["noised"], "latent": "!link masked"},
    inpainted={**LOOP, "latent": "!link inpaint_noised", "cfg": CFG},
    inpaint_decoded={**DECODE, "latent": "!link inpainted"},
)

ENSEMBLE = txt2img(
    INPUTS,
    flow=True,
    **COMMON,
    refiner={"type": "LoadCheckpoint", "checkpoint": '"builtin:tiny-sdxl-refiner"'},
    refiner_positive={"type": "CLIPEncode", "clip": "!link refiner.clip", "text": f'"{PROMPT}"'},
    refiner_negative={"type": "CLIPEncode", "clip": "!link refiner.clip", "text": f'"{NEGATIVE}"'},
    refiner_schedule={**SCHEDULE, "model": "!link refiner.model", "steps": STEPS},
    resumed={
        "type": "AddNoise",
        "latent": "!link denoised",
        "schedule": "!link refiner_schedule",
        "seed": 99,
    },
    refined={
        **LOOP,
        "model": "!link refiner.model",
        "positive": "!link refiner_positive",
        "negative": "!link refiner_negative",
        "latent": "!link resumed",
        "cfg": CFG,
    },
    refined_decoded={**DECODE, "vae": "!link refiner.vae", "latent": "!link refined"},
)


def graph_image(runner: Runner, workflow: str, output: str = "decoded", **inputs: Any) -> np.ndarray:
    """A VAEDecode's pixels as (batch, height, width, 3), like a pipeline's numpy output."""
    return decoded_pixels(runner, workflow, inputs, output)


class Pipelines:
    """diffusers' SDXL pipelines on the tiny checkpoints; each call swaps in the sampler's scheduler."""

    def __init__(self) -> None:
        self.base = StableDiffusionXLPipeline.from_pretrained(str(BASE))
        self.img2img = StableDiffusionXLImg2ImgPipeline(**self.base.components)
        self.inpaint = StableDiffusionXLInpaintPipeline(**self.base.components)
        self.refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(REFINER))
        self.config = dict(self.base.scheduler.config)
        for pipe in (self.base, self.img2img, self.inpaint, self.refiner):
            pipe.set_progress_bar_config(disable=True)

    def run(self, pipe: Any, sampler: str, seed: int, **kwargs: Any) -> Any:
        return pipeline_images(
            pipe,
            self.config,
            sampler,
            seed,
            prompt=PROMPT,
            negative_prompt=NEGATIVE,
            num_inference_steps=STEPS,
            guidance_scale=CFG,
            **kwargs,
        )


@pytest.fixture(scope="module")
def pipes() -> Pipelines:
    return Pipelines()


def picture() -> PILImage.Image:
    return PILImage.open(PICTURE).convert("RGB")


@pytest.mark.parametrize("sampler", SAMPLER_CASES)
def test_txt2img_matches_sdxl_pipeline(graph_runner: Runner, pipes: Pipelines, sampler: str) -> None:
    ours = graph_image(graph_runner, TXT2IMG, seed=3, sampler=sampler)
    theirs = pipes.run(pipes.base, sampler, 3, height=SIZE, width=SIZE)
    assert ours.shape == (1, SIZE, SIZE, 3)
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_img2img_matches_sdxl_img2img_pipeline(graph_runner: Runner, pipes: Pipelines, sampler: str) -> None:
    ours = graph_image(graph_runner, IMG2IMG, seed=5, sampler=sampler, strength=0.6)
    theirs = pipes.run(pipes.img2img, sampler, 5, image=picture(), strength=0.6)
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_inpaint_matches_sdxl_inpaint_pipeline(graph_runner: Runner, pipes: Pipelines, sampler: str) -> None:
    ours = graph_image(graph_runner, IMG2IMG, "inpaint_decoded", seed=2, sampler=sampler, strength=1.0)
    theirs = pipes.run(
        pipes.inpaint,
        sampler,
        2,
        image=picture(),
        mask_image=PILImage.open(MASK).convert("L"),
        strength=1.0,
        height=SIZE,
        width=SIZE,
    )
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("sampler", SAMPLER_CASES)
def test_base_and_refiner_ensemble_matches_diffusers(
    graph_runner: Runner, pipes: Pipelines, sampler: str
) -> None:
    ours = graph_image(graph_runner, ENSEMBLE, "refined_decoded", seed=4, sampler=sampler, end=0.75)
    latents = pipes.run(
        pipes.base, sampler, 4, height=SIZE, width=SIZE, denoising_end=0.75, output_type="latent"
    )
    theirs = pipes.run(pipes.refiner, sampler, 99, image=latents, denoising_start=0.75)
    assert max_diff(ours, theirs) <= TOLERANCE
    base_only = graph_image(graph_runner, TXT2IMG, seed=4, sampler=sampler)
    assert max_diff(ours, base_only) > 1e-3  # the refiner really drew the end of the schedule
