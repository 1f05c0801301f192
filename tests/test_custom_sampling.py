"""Custom sampling in sdflow's typed form: BasicScheduler, KarrasScheduler, ExponentialScheduler,
SDTurboScheduler and SplitSigmas make Sigmas; KSamplerSelect + CustomSchedule run them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_parity_txt2img import NEGATIVE, PROMPT, WORKFLOW

from sdflow.errors import SdflowError
from sdflow.graphs import loads
from sdflow.nodes.ops.sigma_schedules import calculate_sigmas, training_sigmas
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "sdflow/builtin/tiny-sd15/scheduler/scheduler_config.json").read_text())
TOLERANCE = 1e-5
CHECKPOINT = """
version: 1
nodes:
  ckpt:
    type: LoadCheckpoint
    checkpoint: "builtin:tiny-sd15"
"""
# The parity workflow with its Scheduler replaced by custom sampling nodes.
CUSTOM = WORKFLOW.replace("  sigmas: default\n", "  sigmas: normal\n").replace(
    """  schedule:
    type: Scheduler
    model: !link ckpt.model
    sampler: !input sampler
    steps: !input steps
    sigmas: !input sigmas
""",
    """  table:
    type: BasicScheduler
    model: !link ckpt.model
    scheduler: !input sigmas
    steps: !input steps
  select:
    type: KSamplerSelect
    sampler_name: !input sampler
  schedule:
    type: CustomSchedule
    model: !link ckpt.model
    sampler: !link select
    sigmas: !link table
""",
)


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def sigmas_of(runner: Runner, node: str, output: str = "sigmas") -> np.ndarray:
    """The Sigmas that node ``table`` (YAML ``node``) gives, as numpy."""
    text = CHECKPOINT + "  table:\n" + "".join(f"    {line}\n" for line in node.strip().splitlines())
    if "SplitSigmas" in node:
        text += "  source:\n    type: BasicScheduler\n    model: !link ckpt.model\n    steps: 6\n"
    result = runner.run(loads(text, "sigmas.yaml"), outputs=["table"])
    return result[f"table.{output}"].values.numpy()


def test_basic_scheduler_gives_the_schedule_table(runner: Runner) -> None:
    ours = sigmas_of(runner, "type: BasicScheduler\nmodel: !link ckpt.model\nscheduler: beta\nsteps: 6")
    np.testing.assert_array_equal(ours, calculate_sigmas(CONFIG, "beta", 6).numpy())


def test_basic_scheduler_denoise_keeps_the_last_steps(runner: Runner) -> None:
    node = "type: BasicScheduler\nmodel: !link ckpt.model\nscheduler: simple\nsteps: 3\ndenoise: 0.5"
    np.testing.assert_array_equal(sigmas_of(runner, node), calculate_sigmas(CONFIG, "simple", 6).numpy()[-4:])


def test_basic_scheduler_at_denoise_zero_gives_no_sigmas(runner: Runner) -> None:
    node = "type: BasicScheduler\nmodel: !link ckpt.model\nsteps: 3\ndenoise: 0.0"
    assert sigmas_of(runner, node).shape == (0,)


def test_karras_scheduler_spaces_its_range_by_rho(runner: Runner) -> None:
    ours = sigmas_of(runner, "type: KarrasScheduler\nsteps: 4\nsigma_max: 10.0\nsigma_min: 0.1\nrho: 3.0")
    ramp = np.linspace(0, 1, 4)
    expected = (10 ** (1 / 3) + ramp * (0.1 ** (1 / 3) - 10 ** (1 / 3))) ** 3
    np.testing.assert_allclose(ours, [*expected, 0.0], rtol=TOLERANCE)


def test_exponential_scheduler_is_even_in_log_sigma(runner: Runner) -> None:
    ours = sigmas_of(runner, "type: ExponentialScheduler\nsteps: 3\nsigma_max: 8.0\nsigma_min: 0.5")
    np.testing.assert_allclose(ours, [8.0, 2.0, 0.5, 0.0], rtol=TOLERANCE)


def test_sd_turbo_scheduler_walks_down_from_timestep_999(runner: Runner) -> None:
    ours = sigmas_of(runner, "type: SDTurboScheduler\nmodel: !link ckpt.model\nsteps: 2")
    training = training_sigmas(CONFIG).numpy()
    np.testing.assert_allclose(ours, [training[999], training[899], 0.0], rtol=TOLERANCE)


@pytest.mark.parametrize(("output", "part"), [("high", slice(None, 3)), ("low", slice(2, None))])
def test_split_sigmas_shares_the_step_sigma(runner: Runner, output: str, part: slice) -> None:
    ours = sigmas_of(runner, "type: SplitSigmas\nsigmas: !link source\nstep: 2", output)
    np.testing.assert_array_equal(ours, calculate_sigmas(CONFIG, "normal", 6).numpy()[part])


def image(runner: Runner, workflow: str, **inputs: Any) -> torch.Tensor:
    settings = {"prompt": PROMPT, "negative": NEGATIVE, "seed": 4, "steps": 4, "cfg": 5.0, **inputs}
    return runner.run(loads(workflow, "custom.yaml"), inputs=settings, outputs=["decoded"])[
        "decoded.image"
    ].pixels


@pytest.mark.parametrize(("sampler", "name"), [("euler", "normal"), ("heun", "simple")])
def test_custom_schedule_draws_what_the_scheduler_draws(runner: Runner, sampler: str, name: str) -> None:
    ours = image(runner, CUSTOM, sampler=sampler, sigmas=name)
    assert torch.equal(ours, image(runner, WORKFLOW, sampler=sampler, sigmas=name))


def test_custom_schedule_refuses_a_sampler_without_custom_sigmas(runner: Runner) -> None:
    with pytest.raises(SdflowError) as caught:
        image(runner, CUSTOM, sampler="euler_ancestral", sigmas="normal")
    message = str(caught.value)
    assert "custom.yaml" in message and "'schedule'" in message and "sigmas" in message
    assert "EulerAncestralDiscreteScheduler takes no custom sigmas" in message
