"""TomePatchModel (token merging): the matching merges and unmerges as ToMe does, attention runs on fewer
tokens at full resolution only, ratio 0 is the unpatched picture, and the base model is never changed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from workflows import patched_beside_plain

from sdflow.graphs import loads
from sdflow.nodes.library.tome_patch_model import TomeProcessor
from sdflow.nodes.ops.token_merge import destination_tokens, match
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def test_merge_removes_the_ratio_and_unmerge_restores_every_position():
    x = torch.randn(2, 64, 8, generator=torch.Generator().manual_seed(1))
    merge, unmerge = match(x, 8, 8, 0.5)
    merged = merge(x)
    assert merged.shape == (2, 32, 8)
    back = unmerge(merged)
    assert back.shape == x.shape
    untouched = (back == x).all(dim=-1)  # kept tokens come back as they were
    assert untouched.sum(dim=1).min() >= 16  # at least the kept sources (48 sources - 32 merged)


def test_identical_tokens_survive_a_round_trip_exactly():
    x = torch.ones(1, 16, 4) * torch.arange(4.0)
    merge, unmerge = match(x, 4, 4, 0.5)
    assert torch.equal(unmerge(merge(x)), x)


def test_a_merged_token_is_averaged_into_its_most_similar_destination():
    x = torch.randn(1, 16, 6, generator=torch.Generator().manual_seed(2))
    is_dst = destination_tokens(4, 4, 2, x.device)
    merge, unmerge = match(x, 4, 4, 1 / 16)  # merge exactly one source
    back = unmerge(merge(x))
    changed = [i for i in range(16) if not torch.equal(back[0, i], x[0, i])]
    source = [i for i in changed if not is_dst[i]]
    destination = [i for i in changed if is_dst[i]]
    assert len(source) == 1 and len(destination) == 1
    mean = (x[0, source[0]] + x[0, destination[0]]) / 2
    assert torch.allclose(back[0, source[0]], mean) and torch.allclose(back[0, destination[0]], mean)
    cosine = torch.nn.functional.cosine_similarity(x[0, source[0]][None], x[0, is_dst], dim=-1)
    assert torch.nonzero(is_dst)[cosine.argmax()].item() == destination[0]


def test_one_destination_per_cell_at_a_seeded_place():
    mask = destination_tokens(6, 6, 2, torch.device("cpu")).view(6, 6)
    cells = mask.view(3, 2, 3, 2).sum(dim=(1, 3))
    assert torch.equal(cells, torch.ones(3, 3, dtype=torch.long))
    assert torch.equal(mask, destination_tokens(6, 6, 2, torch.device("cpu")).view(6, 6))


WORKFLOW = patched_beside_plain(
    "tome",
    {"type": "TomePatchModel", "model": "!link ckpt.model", "ratio": "!input ratio"},
    {"ratio": "{type: float, default: 0.5}", "steps": "{type: int, default: 3}"},
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def test_ratio_zero_draws_the_unpatched_picture(runner):
    result = runner.run(loads(WORKFLOW, "tome.yaml"), inputs={"ratio": 0.0}, outputs=["fast", "plain"])
    assert torch.equal(result.tensor("fast"), result.tensor("plain"))


def test_a_merge_changes_the_picture_a_little_and_leaves_the_base_model_alone(runner):
    before = runner.run(loads(WORKFLOW, "tome.yaml"), inputs={"ratio": 0.0}, outputs=["plain"]).tensor(
        "plain"
    )
    result = runner.run(loads(WORKFLOW, "tome.yaml"), inputs={"ratio": 0.5}, outputs=["fast", "plain"])
    fast, plain = result.tensor("fast"), result.tensor("plain")
    assert torch.equal(plain, before)  # the cached base model was not patched
    assert not torch.equal(fast, plain)
    assert (fast - plain).abs().mean() < 0.5 * plain.abs().mean()


def test_attention_runs_on_fewer_tokens_only_at_full_resolution(tmp_path, monkeypatch):
    seen: list[tuple[int, int]] = []
    original = TomeProcessor.__call__

    def spy(self, attn, hidden_states, *args, **kwargs):
        inner = self.inner

        def counting(attn_, states, *a, **k):
            seen.append((hidden_states.shape[1], states.shape[1]))
            return inner(attn_, states, *a, **k)

        self.inner = counting
        try:
            return original(self, attn, hidden_states, *args, **kwargs)
        finally:
            self.inner = inner

    monkeypatch.setattr(TomeProcessor, "__call__", spy)
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))  # nothing cached
    runner.run(loads(WORKFLOW, "tome.yaml"), inputs={"ratio": 0.5}, outputs=["fast"])
    full = [(given, used) for given, used in seen if given == 64]  # 8x8 latent: full resolution
    assert full and all(used == 32 for _, used in full)
    assert all(used == given for given, used in seen if given != 64)
