"""SD3 and Flux through the SD 1.x txt2img graph equal diffusers' StableDiffusion3Pipeline and
FluxPipeline on the tiny random built-ins (tiny-sd3, tiny-flux), for each flow-matching sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from workflows import decoded_pixels, max_diff, txt2img

from sdflow.errors import SdflowWarning, UserError
from sdflow.models import flow
from sdflow.runner import Runner

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
LEVEL = 1 / 255  # one PNG level
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry"
SIZE = 64
STEPS = 3
INPUTS = {"seed": 0, "sampler": "euler", "cfg": 1.0, "steps": STEPS}


def workflow(checkpoint: str, **changes: Any) -> str:
    prompts = {"positive": {"text": f'"{PROMPT}"'}, "negative": {"text": f'"{NEGATIVE}"'}}
    for name, fields in prompts.items():
        changes[name] = {**fields, **changes.get(name, {})}
    return txt2img(INPUTS, flow=True, ckpt={"checkpoint": f'"builtin:{checkpoint}"'}, **changes)


SD3_GRAPH = workflow("tiny-sd3")
FLUX_GRAPH = workflow("tiny-flux")


def reference(pipe: Any, sampler: str, seed: int, **kwargs: Any) -> np.ndarray:
    """``pipe``'s numpy output with the scheduler ``sampler`` names (sdflow's own table)."""
    cls, config = flow.flow_scheduler(sampler, dict(pipe.scheduler_config_base))
    pipe.scheduler = cls.from_config(config)
    return pipe(
        PROMPT,
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        **kwargs,
    ).images


def _pipe(cls: type, name: str) -> Any:
    pipe = cls.from_pretrained(str(BUILTIN / name))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler_config_base = dict(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def sd3() -> Any:
    return _pipe(StableDiffusion3Pipeline, "tiny-sd3")


@pytest.fixture(scope="module")
def flux() -> Any:
    return _pipe(FluxPipeline, "tiny-flux")


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_sd3_txt2img_with_cfg_and_negative_equals_the_sd3_pipeline(
    graph_runner: Runner, sd3: Any, sampler: str
) -> None:
    ours = decoded_pixels(graph_runner, SD3_GRAPH, {"seed": 3, "sampler": sampler, "cfg": 4.0})
    theirs = reference(sd3, sampler, 3, negative_prompt=NEGATIVE, guidance_scale=4.0)
    assert ours.shape == (1, SIZE, SIZE, 3)
    assert max_diff(ours, theirs) <= LEVEL
    unguided = decoded_pixels(graph_runner, SD3_GRAPH, {"seed": 3, "sampler": sampler, "cfg": 1.0})
    assert max_diff(ours, unguided) > 10 * LEVEL  # the negative prompt and CFG are really used


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_flux_txt2img_equals_the_flux_pipeline(graph_runner: Runner, flux: Any, sampler: str) -> None:
    ours = decoded_pixels(graph_runner, FLUX_GRAPH, {"seed": 5, "sampler": sampler})
    theirs = reference(flux, sampler, 5, guidance_scale=3.5)  # diffusers' default distilled guidance
    assert max_diff(ours, theirs) <= LEVEL


T5_TEXT = "a green square"


@pytest.mark.parametrize(("checkpoint", "argument"), [("tiny-sd3", "prompt_3"), ("tiny-flux", "prompt_2")])
def test_t5_text_is_what_the_pipelines_t5_prompt_reads(
    graph_runner: Runner, sd3: Any, flux: Any, checkpoint: str, argument: str
) -> None:
    text = workflow(checkpoint, positive={"t5_text": f'"{T5_TEXT}"', "t5_length": 64})
    ours = decoded_pixels(graph_runner, text, {"seed": 1})
    pipe = sd3 if checkpoint == "tiny-sd3" else flux
    theirs = reference(
        pipe,
        "euler",
        1,
        guidance_scale=1.0 if pipe is sd3 else 3.5,
        max_sequence_length=64,
        **{argument: T5_TEXT},
    )
    assert max_diff(ours, theirs) <= LEVEL
    assert max_diff(ours, decoded_pixels(graph_runner, workflow(checkpoint), {"seed": 1})) > 0.0


def test_heun_cannot_follow_fluxs_shift_by_resolution(graph_runner: Runner) -> None:
    with pytest.raises(UserError, match="no shift by resolution") as caught:
        decoded_pixels(graph_runner, FLUX_GRAPH, {"sampler": "heun"})
    assert caught.value.location.field == "sampler"


def test_clip_skip_reads_the_clip_layer_the_sd3_pipeline_reads(graph_runner: Runner, sd3: Any) -> None:
    text = workflow("tiny-sd3", positive={"clip_skip": 1})
    ours = decoded_pixels(graph_runner, text, {"seed": 2})
    assert max_diff(ours, reference(sd3, "euler", 2, guidance_scale=1.0, clip_skip=1)) <= LEVEL
    assert max_diff(ours, decoded_pixels(graph_runner, SD3_GRAPH, {"seed": 2})) > 0.0


def test_comfy_mode_on_a_flow_model_says_it_samples_in_diffusers_mode(graph_runner: Runner) -> None:
    comfy = workflow("tiny-sd3", schedule={"mode": "comfy"})
    with pytest.warns(SdflowWarning, match=r"schedule.*mode.*samples in diffusers mode"):
        ours = decoded_pixels(graph_runner, comfy, {"seed": 3})
    assert max_diff(ours, decoded_pixels(graph_runner, SD3_GRAPH, {"seed": 3})) == 0.0
