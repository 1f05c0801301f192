"""DeepCache: the deep blocks run on every interval-th UNet call only, full calls equal the unpatched
UNet, a new loop starts afresh, interval 1 is the unpatched picture and the base model is untouched."""

from __future__ import annotations

import pytest
import torch
from workflows import patched_beside_plain

from sdflow.errors import NodeError
from sdflow.graphs import loads
from sdflow.nodes.library.deep_cache import deep_blocks, deep_cache_unet
from sdflow.runner import Runner

WORKFLOW = patched_beside_plain(
    "cached",
    {
        "type": "DeepCache",
        "model": "!link ckpt.model",
        "interval": "!input interval",
        "branch": "!input branch",
    },
    {"interval": "{type: int, default: 3}", "branch": "{type: int, default: 0}"},
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


@pytest.fixture(scope="module")
def unet(runner):
    text = "version: 1\nnodes:\n  ckpt: {type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}\n"
    return runner.run(loads(text, "ckpt.yaml"), outputs=["ckpt"])["ckpt.model"].unet


def calls(unet, timesteps, monkeypatch) -> tuple[list[torch.Tensor], list[int]]:
    """The outputs of a cached UNet over ``timesteps`` and how many times its mid block ran."""
    mid = type(unet.mid_block)
    ran: list[int] = []
    original = mid.forward

    def counting(self, *args, **kwargs):
        ran.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mid, "forward", counting)
    patched = deep_cache_unet(unet, 3, 0)
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    outs, counts = [], []
    with torch.no_grad():
        for t in timesteps:
            outs.append(patched(sample, t, encoder_hidden_states=text).sample)
            counts.append(len(ran))
    return outs, counts


def test_the_deep_blocks_run_on_every_interval_th_call_only(unet, monkeypatch):
    _, counts = calls(unet, [900, 800, 700, 600, 500], monkeypatch)
    assert counts == [1, 1, 1, 2, 2]


def test_full_calls_equal_the_unpatched_unet_and_cached_ones_differ(unet, monkeypatch):
    timesteps = [900, 800, 700, 600]
    outs, _ = calls(unet, timesteps, monkeypatch)
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = [unet(sample, t, encoder_hidden_states=text).sample for t in timesteps]
    assert torch.equal(outs[0], plain[0]) and torch.equal(outs[3], plain[3])
    assert not torch.equal(outs[1], plain[1])


def test_a_larger_timestep_starts_a_new_loop(unet, monkeypatch):
    _, counts = calls(unet, [900, 800, 900, 800], monkeypatch)
    assert counts == [1, 1, 2, 2]


def test_the_outer_blocks_stay_and_the_rest_is_cached(unet):
    names = deep_blocks(unet, 0)
    assert "mid_block" in names and "down_blocks.0" not in names
    assert f"up_blocks.{len(unet.up_blocks) - 1}" not in names


def test_interval_one_draws_the_unpatched_picture(runner):
    result = runner.run(loads(WORKFLOW, "dc.yaml"), inputs={"interval": 1}, outputs=["fast", "plain"])
    assert torch.equal(result.tensor("fast"), result.tensor("plain"))


def test_a_cached_run_is_close_repeatable_and_leaves_the_base_alone(runner, tmp_path):
    before = runner.run(loads(WORKFLOW, "dc.yaml"), inputs={"interval": 1}, outputs=["plain"]).tensor("plain")
    result = runner.run(loads(WORKFLOW, "dc.yaml"), inputs={"interval": 3}, outputs=["fast", "plain"])
    fast, plain = result.tensor("fast"), result.tensor("plain")
    assert torch.equal(plain, before)
    assert not torch.equal(fast, plain)
    assert (fast - plain).abs().mean() < 0.5 * plain.abs().mean()
    again = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    assert torch.equal(
        again.run(loads(WORKFLOW, "dc.yaml"), inputs={"interval": 3}, outputs=["fast"]).tensor("fast"), fast
    )


def test_a_branch_that_leaves_nothing_to_cache_is_a_located_error(runner):
    with pytest.raises(NodeError) as caught:
        runner.run(loads(WORKFLOW, "dc.yaml"), inputs={"branch": 2}, outputs=["fast"])
    assert caught.value.location.node == "cached" and caught.value.location.field == "branch"
