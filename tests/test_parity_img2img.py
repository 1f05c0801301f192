"""The img2img graph (LoadImage, VAEEncode, AddNoise with strength, DenoiseLoop) reproduces
diffusers' StableDiffusionImg2ImgPipeline on the same components, seed and scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import StableDiffusionImg2ImgPipeline
from PIL import Image as PILImage
from references import pipeline_images
from workflows import decoded_pixels, img2img, max_diff

from sdflow.nodes.ops.samplers import SAMPLERS
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "sdflow" / "builtin" / "tiny-sd15"
PICTURE = ROOT / "examples" / "inputs" / "shapes.png"
TOLERANCE = 1e-4
PROMPT = "a red circle and a yellow square"
NEGATIVE = "blurry"
STEPS = 10
CFG = 5.0

WORKFLOW = img2img(
    {"image": f'"{PICTURE}"', "seed": 0, "sampler": "ddim", "strength": 0.75},
    positive={"text": f'"{PROMPT}"'},
    negative={"text": f'"{NEGATIVE}"'},
    schedule={"steps": STEPS},
    denoised={"cfg": CFG},
)


@pytest.fixture(scope="module")
def pipe() -> StableDiffusionImg2ImgPipeline:
    pipeline = StableDiffusionImg2ImgPipeline.from_pretrained(str(CHECKPOINT))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def base_scheduler_config(pipe: StableDiffusionImg2ImgPipeline) -> dict[str, Any]:
    """The checkpoint's own scheduler config, before any test swaps the scheduler."""
    return dict(pipe.scheduler.config)


def graph_image(runner: Runner, picture: Path, **inputs: Any) -> np.ndarray:
    """The workflow's decoded pixels as (batch, height, width, 3), like the pipeline's numpy output."""
    return decoded_pixels(runner, WORKFLOW, {"image": str(picture), **inputs})


def pipeline_image(
    pipe: StableDiffusionImg2ImgPipeline,
    config: dict[str, Any],
    picture: Path,
    sampler: str,
    seed: int,
    strength: float,
) -> np.ndarray:
    """diffusers' own img2img with the scheduler ``sampler`` names (the mapping itself is checked by
    the txt2img parity tests), on the picture as a PIL image."""
    return pipeline_images(
        pipe,
        config,
        sampler,
        seed,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=PILImage.open(picture).convert("RGB"),
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
    )


@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
# tcd (the pipeline passes eta 0, sdflow keeps gamma 0.3) and dpmpp_sde (its Brownian-tree seed comes
# from the generator) need reference settings of their own: tests/test_samplers_more.py has them (txt2img).
@pytest.mark.parametrize("sampler", [name for name in SAMPLERS if name not in ("tcd", "dpmpp_sde")])
def test_graph_matches_img2img_pipeline(
    graph_runner: Runner, pipe, base_scheduler_config, sampler: str, strength: float
) -> None:
    ours = graph_image(graph_runner, PICTURE, seed=5, sampler=sampler, strength=strength)
    theirs = pipeline_image(pipe, base_scheduler_config, PICTURE, sampler, seed=5, strength=strength)
    assert ours.shape == (1, 64, 64, 3)
    assert max_diff(ours, theirs) <= TOLERANCE


def test_strength_changes_how_far_the_result_departs_from_the_input(graph_runner: Runner) -> None:
    original = np.asarray(PILImage.open(PICTURE).convert("RGB"), dtype=np.float32)[None] / 255.0
    light = graph_image(graph_runner, PICTURE, seed=5, sampler="ddim", strength=0.3)
    heavy = graph_image(graph_runner, PICTURE, seed=5, sampler="ddim", strength=1.0)
    assert max_diff(light, heavy) > 1e-2
    assert np.abs(light - original).mean() < np.abs(heavy - original).mean()


def test_sides_not_multiple_of_8_are_resized_down_as_diffusers_does(
    graph_runner: Runner, pipe, base_scheduler_config, tmp_path: Path
) -> None:
    odd = tmp_path / "odd.png"
    PILImage.open(PICTURE).convert("RGB").resize((70, 53), PILImage.Resampling.BICUBIC).save(odd)
    ours = graph_image(graph_runner, odd, seed=2, sampler="euler_ancestral", strength=0.75)
    theirs = pipeline_image(pipe, base_scheduler_config, odd, "euler_ancestral", seed=2, strength=0.75)
    assert ours.shape == (1, 48, 64, 3)
    assert max_diff(ours, theirs) <= TOLERANCE
