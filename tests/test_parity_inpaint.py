"""The inpaint graph (LoadImage, LoadMask, VAEEncode with a mask, AddNoise, DenoiseLoop) reproduces
diffusers' StableDiffusionInpaintPipeline, with a 4-channel model (blend after every step) and a
9-channel inpainting model (mask and masked-image latent as UNet input)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline
from PIL import Image as PILImage
from references import pipeline_images
from workflows import decoded_pixels, inpaint, max_diff

from sdflow.graphs import loads
from sdflow.nodes.ops.samplers import SAMPLERS
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PICTURE = ROOT / "examples" / "inputs" / "shapes.png"
MASK = ROOT / "examples" / "inputs" / "shapes_mask.png"
MODELS = ["tiny-sd15", "tiny-sd15-inpaint"]  # 4 and 9 UNet input channels
TOLERANCE = 1e-4
PROMPT = "a green triangle"
NEGATIVE = "blurry"
STEPS = 10
CFG = 5.0

WORKFLOW = inpaint(
    {"checkpoint": '"builtin:tiny-sd15"', "mask": f'"{MASK}"', "seed": 0, "sampler": "ddim", "strength": 1.0},
    ckpt={"checkpoint": "!input checkpoint"},
    positive={"text": f'"{PROMPT}"'},
    negative={"text": f'"{NEGATIVE}"'},
    picture={"path": f'"{PICTURE}"'},
    schedule={"steps": STEPS},
    denoised={"cfg": CFG},
)


@pytest.fixture(scope="module")
def pipes() -> dict[str, tuple[StableDiffusionInpaintPipeline, dict[str, Any]]]:
    """Each model's pipeline with its own scheduler config (kept before any test swaps schedulers)."""
    loaded = {}
    for name in MODELS:
        pipeline = StableDiffusionInpaintPipeline.from_pretrained(str(BUILTIN / name))
        pipeline.set_progress_bar_config(disable=True)
        loaded[name] = (pipeline, dict(pipeline.scheduler.config))
    return loaded


def graph_image(runner: Runner, model: str, **inputs: Any) -> np.ndarray:
    """The workflow's decoded pixels as (batch, height, width, 3), like the pipeline's numpy output."""
    return decoded_pixels(runner, WORKFLOW, {"checkpoint": f"builtin:{model}", **inputs})


def pipeline_image(
    pipes, model: str, sampler: str, seed: int, strength: float, mask: Path = MASK
) -> np.ndarray:
    """diffusers' own inpainting with the scheduler ``sampler`` names (the mapping itself is checked
    by the txt2img parity tests), on PIL pictures at the image's size."""
    pipe, config = pipes[model]
    return pipeline_images(
        pipe,
        config,
        sampler,
        seed,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        image=PILImage.open(PICTURE).convert("RGB"),
        mask_image=PILImage.open(mask),
        height=64,
        width=64,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
    )


# tcd (the pipeline passes eta 0, sdflow keeps gamma 0.3) and dpmpp_sde (its Brownian-tree seed comes
# from the generator) need reference settings of their own: tests/test_samplers_more.py has them (txt2img).
@pytest.mark.parametrize("sampler", [name for name in SAMPLERS if name not in ("tcd", "dpmpp_sde")])
@pytest.mark.parametrize("model", MODELS)
def test_graph_matches_inpaint_pipeline(graph_runner: Runner, pipes, model: str, sampler: str) -> None:
    ours = graph_image(graph_runner, model, seed=4, sampler=sampler, strength=1.0)
    theirs = pipeline_image(pipes, model, sampler, seed=4, strength=1.0)
    assert ours.shape == (1, 64, 64, 3)
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "euler_ancestral", "dpmpp_2m"])
@pytest.mark.parametrize("model", MODELS)
def test_graph_matches_inpaint_pipeline_at_partial_strength(
    graph_runner: Runner, pipes, model: str, sampler: str
) -> None:
    ours = graph_image(graph_runner, model, seed=9, sampler=sampler, strength=0.6)
    theirs = pipeline_image(pipes, model, sampler, seed=9, strength=0.6)
    assert max_diff(ours, theirs) <= TOLERANCE


@pytest.mark.parametrize("model", MODELS)
def test_a_smaller_mask_of_the_same_shape_is_resized_as_diffusers_does(
    graph_runner: Runner, pipes, model: str, tmp_path: Path
) -> None:
    small = tmp_path / "small_mask.png"
    PILImage.open(MASK).resize((24, 24), PILImage.Resampling.BILINEAR).save(small)
    ours = graph_image(graph_runner, model, seed=1, sampler="euler_ancestral", mask=str(small))
    theirs = pipeline_image(pipes, model, "euler_ancestral", seed=1, strength=1.0, mask=small)
    assert max_diff(ours, theirs) <= TOLERANCE


def test_four_channel_inpainting_ends_with_the_original_latent_outside_the_mask(
    graph_runner: Runner,
) -> None:
    workflow = loads(WORKFLOW, "inpaint-parity.yaml")
    result = graph_runner.run(workflow, inputs={"sampler": "euler"}, outputs=["denoised", "encoded"])
    original = result["encoded.latent"]
    denoised = result["denoised.latent"].samples
    keep = (original.noise_mask == 0).expand_as(denoised)
    assert 0 < int(keep.sum()) < keep.numel()
    assert torch.equal(denoised[keep], original.samples[keep])
    assert (denoised[~keep] - original.samples[~keep]).abs().mean() > 0.1
