"""The txt2img graph reproduces diffusers' StableDiffusionPipeline on the same components."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from workflows import decoded_pixels, max_diff, txt2img

from sdflow.nodes.ops.samplers import SAMPLERS, karras_samplers
from sdflow.runner import Runner

CHECKPOINT = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15"
TOLERANCE = 1e-4
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry, green"
SIZE = 64
STEPS = 8
GUIDED = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "num_inference_steps": STEPS, "guidance_scale": 5.0}

# What each sampler name means in diffusers terms: the class and the overrides on the checkpoint's config.
DPMPP_2M = {"algorithm_type": "dpmsolver++", "solver_order": 2}
EXPECTED_SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddim": (DDIMScheduler, {}),
    "ddpm": (DDPMScheduler, {}),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}),  # PLMS, as SD 1.x's own config sets it
    "lms": (LMSDiscreteScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_ancestral": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, DPMPP_2M),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, {**DPMPP_2M, "use_karras_sigmas": True}),
    "unipc": (UniPCMultistepScheduler, {}),
}

WORKFLOW = txt2img(
    {
        "prompt": '""',
        "negative": '""',
        "clip_skip": 0,
        "seed": 0,
        "steps": 8,
        "cfg": 5.0,
        "sampler": "ddim",
        "sigmas": "default",
        "batch": 1,
    },
    positive={"clip_skip": "!input clip_skip"},
    negative={"text": "!input negative", "clip_skip": "!input clip_skip"},
    empty={"batch_size": "!input batch"},
    schedule={"sigmas": "!input sigmas"},
)


class Reference:
    """diffusers' own txt2img on the tiny checkpoint, with the scheduler a sampler name stands for."""

    def __init__(self) -> None:
        self.pipe = StableDiffusionPipeline.from_pretrained(str(CHECKPOINT))
        self.pipe.set_progress_bar_config(disable=True)
        # Swap from the checkpoint's own config each time: a swapped-in config carries its overrides.
        self.base_config = dict(self.pipe.scheduler.config)

    def image(self, sampler: str, seed: int, karras: bool = False, **kwargs: Any) -> np.ndarray:
        """The pipeline's numpy output, (batch, height, width, 3)."""
        cls, overrides = EXPECTED_SCHEDULERS[sampler]
        if karras:
            overrides = {**overrides, "use_karras_sigmas": True}
        self.pipe.scheduler = cls.from_config(self.base_config, **overrides)
        output = self.pipe(
            height=SIZE,
            width=SIZE,
            output_type="np",
            generator=torch.Generator().manual_seed(seed),
            **kwargs,
        )
        return output.images


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def graph_image(runner: Runner, **inputs: Any) -> np.ndarray:
    """The workflow's VAEDecode pixels as (batch, height, width, 3), like the pipeline's numpy output."""
    return decoded_pixels(runner, WORKFLOW, inputs)


def clip_skip_embeds(pipe: StableDiffusionPipeline, text: str, clip_skip: int) -> torch.Tensor:
    """Prompt embeddings from the layer ``clip_skip`` before the last, as diffusers' clip_skip computes
    them (its own argument reaches for `text_model`, which transformers 5 removed)."""
    ids = pipe.tokenizer(
        text,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states
        return pipe.text_encoder.final_layer_norm(hidden[-(clip_skip + 1)])


def test_every_sampler_has_a_parity_case() -> None:
    assert set(EXPECTED_SCHEDULERS) <= set(SAMPLERS)  # the rest: tests/test_samplers_more.py


@pytest.mark.parametrize("sampler", list(EXPECTED_SCHEDULERS))
def test_graph_matches_pipeline_for_sampler(graph_runner: Runner, reference: Reference, sampler: str) -> None:
    ours = graph_image(
        graph_runner, prompt=PROMPT, negative=NEGATIVE, seed=7, steps=STEPS, cfg=5.0, sampler=sampler
    )
    theirs = reference.image(
        sampler,
        seed=7,
        **GUIDED,
    )
    assert ours.shape == (1, SIZE, SIZE, 3)
    assert max_diff(ours, theirs) <= TOLERANCE


def test_the_karras_samplers_are_those_diffusers_gives_karras_sigmas() -> None:
    ours = [name for name in karras_samplers() if name in EXPECTED_SCHEDULERS]
    assert ours == ["lms", "euler", "heun", "dpmpp_2m", "unipc"]


@pytest.mark.parametrize("sampler", [name for name in karras_samplers() if name in EXPECTED_SCHEDULERS])
def test_graph_matches_pipeline_with_karras_sigmas(
    graph_runner: Runner, reference: Reference, sampler: str
) -> None:
    common = {"prompt": PROMPT, "negative": NEGATIVE, "seed": 5, "steps": STEPS, "cfg": 5.0}
    ours = graph_image(graph_runner, **common, sampler=sampler, sigmas="karras")
    theirs = reference.image(
        sampler,
        seed=5,
        karras=True,
        **GUIDED,
    )
    assert max_diff(ours, theirs) <= TOLERANCE
    plain = graph_image(graph_runner, **common, sampler=sampler)
    assert max_diff(ours, plain) > 1e-3  # the sigmas changed the picture


def test_dpmpp_2m_karras_is_dpmpp_2m_with_karras_sigmas(graph_runner: Runner) -> None:
    common = {"prompt": PROMPT, "negative": NEGATIVE, "seed": 5, "steps": 4, "cfg": 5.0}
    alias = graph_image(graph_runner, **common, sampler="dpmpp_2m_karras")
    assert np.array_equal(alias, graph_image(graph_runner, **common, sampler="dpmpp_2m", sigmas="karras"))
    assert np.array_equal(
        alias, graph_image(graph_runner, **common, sampler="dpmpp_2m_karras", sigmas="karras")
    )


def test_graph_matches_pipeline_with_clip_skip(graph_runner: Runner, reference: Reference) -> None:
    ours = graph_image(
        graph_runner,
        prompt=PROMPT,
        negative=NEGATIVE,
        clip_skip=1,
        seed=3,
        steps=STEPS,
        cfg=5.0,
        sampler="euler",
    )
    theirs = reference.image(
        "euler",
        seed=3,
        prompt_embeds=clip_skip_embeds(reference.pipe, PROMPT, 1),
        negative_prompt_embeds=clip_skip_embeds(reference.pipe, NEGATIVE, 1),
        num_inference_steps=STEPS,
        guidance_scale=5.0,
    )
    without_skip = graph_image(
        graph_runner, prompt=PROMPT, negative=NEGATIVE, seed=3, steps=STEPS, cfg=5.0, sampler="euler"
    )
    assert max_diff(ours, theirs) <= TOLERANCE
    assert max_diff(ours, without_skip) > 1e-3  # clip skip really changed the image


def test_graph_matches_pipeline_for_a_batch_of_two(graph_runner: Runner, reference: Reference) -> None:
    ours = graph_image(
        graph_runner,
        prompt=PROMPT,
        negative=NEGATIVE,
        seed=11,
        steps=STEPS,
        cfg=5.0,
        sampler="euler_ancestral",
        batch=2,
    )
    theirs = reference.image(
        "euler_ancestral",
        seed=11,
        **GUIDED,
        num_images_per_prompt=2,
    )
    assert ours.shape == (2, SIZE, SIZE, 3)
    assert max_diff(ours, theirs) <= TOLERANCE
    assert max_diff(ours[0], ours[1]) > 1e-3  # two different images, not one twice


@pytest.mark.parametrize("cfg", [1.0, 0.5])
def test_graph_matches_pipeline_without_guidance(
    graph_runner: Runner, reference: Reference, cfg: float
) -> None:
    ours = graph_image(
        graph_runner, prompt=PROMPT, negative=NEGATIVE, seed=5, steps=STEPS, cfg=cfg, sampler="ddim"
    )
    theirs = reference.image(
        "ddim",
        seed=5,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=cfg,
    )
    assert max_diff(ours, theirs) <= TOLERANCE
