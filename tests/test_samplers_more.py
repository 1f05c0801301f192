"""The samplers added for issue 23 (ComfyUI's names) reproduce diffusers' StableDiffusionPipeline with
the scheduler each name stands for, run at 1, 2 and 7 steps, and cfg 1 calls the UNet once per step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils import is_torchsde_available
from test_parity_txt2img import EXPECTED_SCHEDULERS, NEGATIVE, PROMPT, SIZE, WORKFLOW, Reference, graph_image

from sdflow.graphs import loads
from sdflow.nodes.ops.samplers import BROWNIAN_SEEDS, SAMPLERS, supports_karras
from sdflow.runner import Runner

PNG_LEVEL = 1 / 255
STEPS = 4
TCD_GAMMA = 0.3
SDE = {"algorithm_type": "sde-dpmsolver++"}
NEW_SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "dpmpp_2m_sde": (DPMSolverMultistepScheduler, {**SDE, "solver_order": 2}),
    "dpmpp_3m_sde": (DPMSolverMultistepScheduler, {**SDE, "solver_order": 3}),
    "dpmpp_2s": (DPMSolverSinglestepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm_2": (KDPM2DiscreteScheduler, {}),
    "dpm_2_ancestral": (KDPM2AncestralDiscreteScheduler, {}),
    "deis": (DEISMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
    "tcd": (TCDScheduler, {}),
    "uni_pc_bh2": (UniPCMultistepScheduler, {"solver_type": "bh2"}),
}
if is_torchsde_available():
    from diffusers import DPMSolverSDEScheduler

    NEW_SCHEDULERS["dpmpp_sde"] = (DPMSolverSDEScheduler, {})
STOCHASTIC = ["dpmpp_2m_sde", "dpmpp_3m_sde", "dpm_2_ancestral", "lcm", "tcd", "dpmpp_sde"]


@pytest.fixture(scope="module")
def graph_runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def brownian_seed(seed: int) -> list[int]:
    """The Brownian-tree seed sdflow draws for dpmpp_sde: from the seeded generator, after the noise."""
    generator = torch.Generator().manual_seed(seed)
    torch.randn((1, 4, SIZE // 8, SIZE // 8), generator=generator)
    return [int(torch.randint(0, BROWNIAN_SEEDS, [], generator=generator))]


def pipeline_image(
    reference: Reference, sampler: str, seed: int, cfg: float, karras: bool = False
) -> np.ndarray:
    """diffusers' pipeline output with ``sampler``'s scheduler (and Karras sigmas when asked)."""
    cls, overrides = NEW_SCHEDULERS[sampler]
    if karras:
        overrides = {**overrides, "use_karras_sigmas": True}
    if sampler == "dpmpp_sde":
        overrides = {**overrides, "noise_sampler_seed": brownian_seed(seed)}
    reference.pipe.scheduler = cls.from_config(reference.base_config, **overrides)
    # The pipeline passes its eta (default 0) to every step that takes one; sdflow keeps TCD's own
    # default gamma 0.3 (as ComfyUI and the TCD authors do), so the reference is asked for it.
    extra = {"eta": TCD_GAMMA} if sampler == "tcd" else {}
    return reference.pipe(
        **extra,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=cfg,
        height=SIZE,
        width=SIZE,
        output_type="np",
        generator=torch.Generator().manual_seed(seed),
    ).images


def ours(runner: Runner, sampler: str, seed: int, cfg: float, sigmas: str = "default", steps: int = STEPS):
    return graph_image(
        runner,
        prompt=PROMPT,
        negative=NEGATIVE,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler=sampler,
        sigmas=sigmas,
    )


def test_every_sampler_has_a_parity_case() -> None:
    assert set(NEW_SCHEDULERS) | set(EXPECTED_SCHEDULERS) == set(SAMPLERS)
    assert all(SAMPLERS[name][0] is cls for name, (cls, _) in NEW_SCHEDULERS.items())


@pytest.mark.parametrize("sampler", list(NEW_SCHEDULERS))
def test_new_sampler_matches_the_pipeline_within_one_png_level(
    graph_runner: Runner, reference: Reference, sampler: str
) -> None:
    theirs = pipeline_image(reference, sampler, seed=7, cfg=5.0)
    assert np.abs(ours(graph_runner, sampler, seed=7, cfg=5.0) - theirs).max() <= PNG_LEVEL


@pytest.mark.parametrize("sampler", [s for s in NEW_SCHEDULERS if supports_karras(s)])
def test_new_sampler_matches_the_pipeline_with_karras_sigmas(
    graph_runner: Runner, reference: Reference, sampler: str
) -> None:
    theirs = pipeline_image(reference, sampler, seed=5, cfg=5.0, karras=True)
    assert np.abs(ours(graph_runner, sampler, seed=5, cfg=5.0, sigmas="karras") - theirs).max() <= PNG_LEVEL


@pytest.mark.parametrize("sampler", list(NEW_SCHEDULERS))
def test_new_sampler_runs_at_one_two_and_seven_steps(graph_runner: Runner, sampler: str) -> None:
    for steps in (1, 2, 7):
        pixels = ours(graph_runner, sampler, seed=1, cfg=5.0, steps=steps)
        assert pixels.shape == (1, SIZE, SIZE, 3) and np.isfinite(pixels).all(), steps


@pytest.mark.parametrize("sampler", [s for s in STOCHASTIC if s in SAMPLERS])
def test_stochastic_sampler_reproduces_its_seed_bit_for_bit(graph_runner: Runner, sampler: str) -> None:
    first = ours(graph_runner, sampler, seed=3, cfg=5.0)
    assert np.array_equal(first, ours(graph_runner, sampler, seed=3, cfg=5.0))
    assert np.abs(first - ours(graph_runner, sampler, seed=4, cfg=5.0)).max() > 1e-3


def test_lcm_refuses_more_steps_than_its_schedule_has(graph_runner: Runner) -> None:
    with pytest.raises(Exception, match="sampler 'lcm' takes at most 50 steps"):
        ours(graph_runner, "lcm", seed=0, cfg=5.0, steps=51)


def test_cfg_one_calls_the_unet_once_per_step_with_a_batch_of_one() -> None:
    runner = Runner(device="cpu", dtype="fp32")  # its own caches: the loop must really run
    inputs = {"prompt": PROMPT, "negative": NEGATIVE, "seed": 2, "steps": 3, "cfg": 1.0, "sampler": "euler"}
    unet = runner.run(loads(WORKFLOW, "cfg1.yaml"), inputs=inputs, outputs=["ckpt"])["ckpt.model"].unet
    batches: list[int] = []
    handle = unet.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    try:
        runner.run(loads(WORKFLOW, "cfg1.yaml"), inputs=inputs, outputs=["decoded"])
    finally:
        handle.remove()
    assert batches == [1, 1, 1]


def test_cfg_one_matches_the_pipeline_without_guidance(graph_runner: Runner, reference: Reference) -> None:
    theirs = pipeline_image(reference, "dpmpp_2m_sde", seed=6, cfg=1.0)
    assert np.abs(ours(graph_runner, "dpmpp_2m_sde", seed=6, cfg=1.0) - theirs).max() <= PNG_LEVEL
