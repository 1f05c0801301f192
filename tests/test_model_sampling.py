"""ModelSamplingDiscrete: the schedulers read the prediction type and zero-SNR setting it gives."""

from __future__ import annotations

import pytest
import torch

from sdflow.graphs import loads
from sdflow.runner import Runner

WORKFLOW = """
version: 1
inputs:
  sampling: {type: str, default: eps}
  zsnr: {type: bool, default: false}
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}
  patched: {type: ModelSamplingDiscrete, model: !link ckpt.model, sampling: !input sampling,
            zsnr: !input zsnr}
  schedule: {type: Scheduler, model: !link patched, sampler: euler, steps: 3}
  plain: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 3}
"""


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


@pytest.mark.parametrize(
    ("sampling", "prediction"), [("eps", "epsilon"), ("v_prediction", "v_prediction"), ("x0", "sample")]
)
def test_the_schedule_follows_the_prediction_type(runner, sampling, prediction):
    result = runner.run(
        loads(WORKFLOW, "ms.yaml"), inputs={"sampling": sampling}, outputs=["schedule", "plain"]
    )
    scheduler = result["schedule.schedule"].make("cpu")
    assert scheduler.config.prediction_type == prediction
    assert result["plain.schedule"].make("cpu").config.prediction_type == "epsilon"  # the base is untouched


def test_zsnr_rescales_the_schedule_to_zero_terminal_snr(runner):
    result = runner.run(loads(WORKFLOW, "ms.yaml"), inputs={"zsnr": True}, outputs=["schedule", "plain"])
    rescaled = result["schedule.schedule"].make("cpu").alphas_cumprod
    plain = result["plain.schedule"].make("cpu").alphas_cumprod
    assert float(rescaled[-1]) < 1e-6 < float(plain[-1])
    assert not torch.equal(rescaled, plain)
