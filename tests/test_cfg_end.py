"""DenoiseLoop cfg_end: guidance for the first part of the loop only; later steps run the positive prompt
alone, in a UNet batch of one, exactly as a split run whose second half has cfg 1."""

from __future__ import annotations

import pytest
import torch

from sdflow.graphs import loads
from sdflow.runner import Runner

WORKFLOW = """
version: 1
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}
  positive: {type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle"}
  negative: {type: CLIPEncode, clip: !link ckpt.clip, text: "blurry"}
  empty: {type: EmptyLatent, width: 64, height: 64}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 4}
  noised: {type: AddNoise, latent: !link empty, schedule: !link schedule, seed: 9}
  short: {type: DenoiseLoop, model: !link ckpt.model, positive: !link positive, negative: !link negative,
          latent: !link noised, cfg: 6.0, cfg_end: 0.5}
  full: {type: DenoiseLoop, model: !link ckpt.model, positive: !link positive, negative: !link negative,
         latent: !link noised, cfg: 6.0}
  first: {type: DenoiseLoop, model: !link ckpt.model, positive: !link positive, negative: !link negative,
          latent: !link noised, cfg: 6.0, end_at: 2}
  resumed: {type: AddNoise, latent: !link first, schedule: !link schedule, seed: 9}
  second: {type: DenoiseLoop, model: !link ckpt.model, positive: !link positive, negative: !link negative,
           latent: !link resumed, cfg: 1.0}
"""


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def test_cfg_end_equals_a_split_whose_second_half_is_unguided(runner):
    result = runner.run(loads(WORKFLOW, "cfg.yaml"), outputs=["short", "second", "full"])
    assert torch.equal(result.tensor("short"), result.tensor("second"))
    assert not torch.equal(result.tensor("short"), result.tensor("full"))


def test_the_unguided_steps_run_a_unet_batch_of_one(runner):
    unet = runner.run(loads(WORKFLOW, "cfg.yaml"), outputs=["ckpt"])["ckpt.model"].unet
    batches: list[int] = []
    handle = unet.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    try:
        runner.run(loads(WORKFLOW.replace("cfg_end: 0.5", "cfg_end: 0.25"), "cfg.yaml"), outputs=["short"])
    finally:
        handle.remove()
    assert batches == [2, 1, 1, 1]
