"""DenoiseLoop cfg_end: guidance for the first part of the loop only; later steps run the positive prompt
alone, in a UNet batch of one, exactly as a split run whose second half has cfg 1 (with a ControlNet
too: past cfg_end it runs on the positive alone)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdflow.graphs import loads
from sdflow.runner import Runner

PICTURE = Path(__file__).resolve().parent.parent / "examples" / "inputs" / "shapes.png"

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


CONTROLLED = f"""
version: 1
nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}}
  plain_positive: {{type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle"}}
  plain_negative: {{type: CLIPEncode, clip: !link ckpt.clip, text: "blurry"}}
  picture: {{type: LoadImage, path: "{PICTURE}"}}
  edges: {{type: Canny, image: !link picture.image, low: 50, high: 150}}
  cn: {{type: LoadControlNet, file: builtin:tiny-sd15-control}}
  controlled: {{type: ApplyControlNet, positive: !link plain_positive, negative: !link plain_negative,
               control_net: !link cn, image: !link edges, strength: 1.0}}
  empty: {{type: EmptyLatent, width: 64, height: 64}}
  schedule: {{type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 4}}
  noised: {{type: AddNoise, latent: !link empty, schedule: !link schedule, seed: 9}}
  short: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
          negative: !link controlled.negative, latent: !link noised, cfg: 6.0, cfg_end: 0.5}}
  plain_short: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link plain_positive,
                negative: !link plain_negative, latent: !link noised, cfg: 6.0, cfg_end: 0.5}}
  whole: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
          negative: !link controlled.negative, latent: !link noised, cfg: 6.0, cfg_end: 1.0}}
  default: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
            negative: !link controlled.negative, latent: !link noised, cfg: 6.0}}
  first: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
          negative: !link controlled.negative, latent: !link noised, cfg: 6.0, end_at: 2}}
  resumed: {{type: AddNoise, latent: !link first, schedule: !link schedule, seed: 9}}
  second: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
           negative: !link controlled.negative, latent: !link resumed, cfg: 1.0}}
"""


def test_cfg_end_with_a_controlnet_equals_a_split_whose_second_half_is_unguided(runner):
    result = runner.run(loads(CONTROLLED, "control.yaml"), outputs=["short", "second", "plain_short"])
    assert torch.equal(result.tensor("short"), result.tensor("second"))
    assert not torch.equal(result.tensor("short"), result.tensor("plain_short"))  # the control acts


def test_cfg_end_1_with_a_controlnet_changes_nothing(runner):
    result = runner.run(loads(CONTROLLED, "control.yaml"), outputs=["whole", "default", "short"])
    assert torch.equal(result.tensor("whole"), result.tensor("default"))
    assert not torch.equal(result.tensor("whole"), result.tensor("short"))


def test_past_cfg_end_the_controlnet_runs_on_the_positive_alone(runner):
    models = runner.run(loads(CONTROLLED, "control.yaml"), outputs=["ckpt", "cn"])
    unet, control_net = models["ckpt.model"].unet, models["cn.control_net"].module
    calls: list[tuple[str, int]] = []

    def counting(name: str):
        return lambda module, args: calls.append((name, args[0].shape[0]))

    hooks = [
        module.register_forward_pre_hook(counting(name))
        for name, module in (("unet", unet), ("control", control_net))
    ]
    try:
        text = CONTROLLED.replace("cfg: 6.0, cfg_end: 0.5}", "cfg: 6.0, cfg_end: 0.25}", 1)
        runner.run(loads(text, "control.yaml"), outputs=["short"])
    finally:
        for hook in hooks:
            hook.remove()
    guided = [("control", 2), ("unet", 2)]
    assert calls == guided + [("control", 1), ("unet", 1)] * 3
