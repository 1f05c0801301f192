"""The runner's caches: what re-runs after a change, keys shared across workflows and processes,
the byte budget, and the device/dtype policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from workflows import TXT2IMG, changed, renamed, render

from sdflow.graphs import Workflow, load, loads
from sdflow.nodes.types import Latent
from sdflow.runner import Runner
from sdflow.runner.core.cache import LRUCache
from sdflow.runner.devices.device import pick_device, pick_dtype

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"
FAST = {"steps": 2, "checkpoint": "builtin:tiny-sd15"}  # the fast random model: speed matters here
EVERY_NODE = {"ckpt", "positive", "negative", "empty", "schedule", "noised", "denoised", "decoded", "save"}

SAME_WORK = {
    "ckpt": "loader",
    "positive": "prompt_text",
    "negative": "empty_text",
    "empty": "canvas",
    "schedule": "sched",
    "noised": "noisy",
    "denoised": "sampled",
    "decoded": "pixels",
}
# The example's graph up to VAEDecode, with every node id changed and no SaveImage.
RENAMED = render(
    renamed(
        changed(
            TXT2IMG,
            {
                "positive": {"text": '"a red circle on a blue background"'},
                "schedule": {"sampler": "ddim", "steps": 2},
                "noised": {"seed": 42},
                "denoised": {"cfg": 4.0},
            },
        ),
        SAME_WORK,
    )
)


@pytest.fixture(scope="module")
def txt2img() -> Workflow:
    return load(EXAMPLE)


def ran(runner: Runner, workflow: Workflow, **inputs: object) -> set[str]:
    """Run and return the ids of the nodes that executed (not served from cache)."""
    return set(runner.run(workflow, inputs={**FAST, **inputs}).report.ran())


def test_first_run_executes_every_node(runner: Runner, txt2img: Workflow) -> None:
    assert ran(runner, txt2img) == EVERY_NODE


def test_identical_rerun_executes_nothing(runner: Runner, txt2img: Workflow) -> None:
    first = runner.run(txt2img, inputs=FAST)
    second = runner.run(txt2img, inputs=FAST)
    assert second.report.ran() == []
    assert set(second.report.status().values()) == {"cached"}
    assert torch.equal(first["decoded"].pixels, second["decoded"].pixels)


def test_seed_change_reruns_only_add_noise_and_what_follows(runner: Runner, txt2img: Workflow) -> None:
    ran(runner, txt2img, seed=1)
    assert ran(runner, txt2img, seed=2) == {"noised", "denoised", "decoded", "save"}


def test_seed_change_gives_a_different_image(runner: Runner, txt2img: Workflow) -> None:
    one = runner.run(txt2img, inputs={**FAST, "seed": 1})["decoded"].pixels
    two = runner.run(txt2img, inputs={**FAST, "seed": 2})["decoded"].pixels
    assert not torch.equal(one, two)


def test_prompt_change_reruns_only_that_clip_encode_and_what_follows(
    runner: Runner, txt2img: Workflow
) -> None:
    ran(runner, txt2img, prompt="a cat")
    assert ran(runner, txt2img, prompt="a dog") == {"positive", "denoised", "decoded", "save"}


def test_cfg_change_reruns_only_denoise_loop_and_what_follows(runner: Runner, txt2img: Workflow) -> None:
    ran(runner, txt2img, cfg=3.0)
    assert ran(runner, txt2img, cfg=6.0) == {"denoised", "decoded", "save"}


def test_workflows_with_different_node_ids_share_cache_entries(runner: Runner, txt2img: Workflow) -> None:
    runner.run(txt2img, inputs=FAST)
    renamed = runner.run(loads(RENAMED, "renamed.yaml"))
    assert renamed.report.status() == {new: "cached" for new in SAME_WORK.values()}


def test_keys_ignore_node_ids(runner: Runner, txt2img: Workflow) -> None:
    ours = runner.keys(txt2img, inputs=FAST)
    theirs = runner.keys(loads(RENAMED, "renamed.yaml"))
    assert {old: ours[old] for old in SAME_WORK} == {old: theirs[new] for old, new in SAME_WORK.items()}


def test_keys_cover_the_planned_nodes_and_differ_between_them(runner: Runner, txt2img: Workflow) -> None:
    keys = runner.keys(txt2img, inputs=FAST)
    assert set(keys) == EVERY_NODE
    assert len(set(keys.values())) == len(keys)


def test_keys_change_with_an_input_only_downstream_of_it(runner: Runner, txt2img: Workflow) -> None:
    before = runner.keys(txt2img, inputs={**FAST, "seed": 1})
    after = runner.keys(txt2img, inputs={**FAST, "seed": 2})
    changed = {node for node in before if before[node] != after[node]}
    assert changed == {"noised", "denoised", "decoded", "save"}


KEYS_SCRIPT = """
import json, sys
from sdflow.graphs import load
from sdflow.runner import Runner
runner = Runner(device="cpu", dtype="fp32", output_dir=sys.argv[2])
print(json.dumps(runner.keys(load(sys.argv[1]), inputs={"steps": 2, "seed": 9})))
"""


def test_keys_are_equal_across_processes(tmp_path: Path, txt2img: Workflow) -> None:
    output_dir = str(tmp_path / "out")
    here = Runner(device="cpu", dtype="fp32", output_dir=output_dir).keys(txt2img, {"steps": 2, "seed": 9})
    environment = {**os.environ, "PYTHONHASHSEED": "4321", "HF_HUB_OFFLINE": "1"}
    there = subprocess.run(
        [sys.executable, "-c", KEYS_SCRIPT, str(EXAMPLE), output_dir],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=120,
    )
    assert json.loads(there.stdout) == here


def test_keys_depend_on_dtype(txt2img: Workflow) -> None:
    fp32 = Runner(device="cpu", dtype="fp32").keys(txt2img, FAST)
    bf16 = Runner(device="cpu", dtype="bf16").keys(txt2img, FAST)
    assert fp32["ckpt"] != bf16["ckpt"]


# -- the byte budget -----------------------------------------------------------------------------


def latent_of(nbytes: int) -> dict[str, Latent]:
    """One node's outputs holding ``nbytes`` bytes of float32 tensor."""
    return {"latent": Latent(torch.zeros(nbytes // 4))}


def test_output_cache_evicts_least_recently_used_when_over_budget() -> None:
    cache = LRUCache(budget=3000)
    for key in ("a", "b", "c"):
        cache.put(key, latent_of(1000))
    cache.get("a")  # now "b" is the least recently used
    cache.put("d", latent_of(1000))
    assert "b" not in cache
    assert all(key in cache for key in ("a", "c", "d"))
    assert cache.used == 3000


def test_output_cache_evicts_as_many_entries_as_a_big_one_needs() -> None:
    cache = LRUCache(budget=3000)
    for key in ("a", "b", "c"):
        cache.put(key, latent_of(1000))
    cache.put("big", latent_of(2500))
    assert [key for key in ("a", "b", "c", "big") if key in cache] == ["big"]
    assert cache.used == 2500


def test_a_tensor_shared_by_two_entries_is_counted_once_and_freed_with_the_last() -> None:
    shared, own = torch.zeros(250), torch.zeros(100)
    cache = LRUCache(budget=3500)
    cache.put("base", {"latent": Latent(shared)})
    cache.put("patched", {"latent": Latent(shared, noise_mask=own)})
    assert cache.used == 1000 + 400
    cache.put("patched", {"latent": Latent(shared, noise_mask=own)})  # replacing it counts nothing twice
    assert cache.used == 1000 + 400
    # 3600 > 3500: evicting "base" frees nothing ("patched" still holds its tensor), so "patched" goes too
    cache.put("other", latent_of(2200))
    assert [key for key in ("base", "patched", "other") if key in cache] == ["other"]
    assert cache.used == 2200


def test_output_cache_keeps_nothing_larger_than_its_budget() -> None:
    cache = LRUCache(budget=1000)
    cache.put("a", latent_of(400))
    assert cache.put("huge", latent_of(4000)) is False
    assert "huge" not in cache
    assert "a" in cache


def test_runner_output_cache_stays_within_its_budget(tmp_path: Path, txt2img: Workflow) -> None:
    budget = 40_000  # the 64x64 image alone is 49,152 bytes; a latent is 256, a conditioning 9,856
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path), output_cache_bytes=budget)
    runner.run(txt2img, inputs=FAST)
    assert 0 < runner.outputs.used <= budget
    assert "decoded" in ran(runner, txt2img)  # the image did not fit, so it is computed again
    assert "ckpt" not in ran(runner, txt2img)  # models live in their own cache


# -- device and dtype policy ---------------------------------------------------------------------


@pytest.fixture
def no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_auto_device_is_cpu_without_accelerator(no_accelerator: None) -> None:
    assert pick_device("auto") == torch.device("cpu")


def test_auto_device_prefers_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_auto_device_takes_mps_before_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("mps")


def test_explicit_device_overrides_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("cpu") == torch.device("cpu")


def test_asking_for_an_absent_cuda_fails_clearly(no_accelerator: None) -> None:
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")


def test_dtype_can_be_overridden() -> None:
    assert pick_dtype(torch.device("cuda"), "fp32") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bf16") == torch.bfloat16


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        pick_dtype(torch.device("cpu"), "fp8")


def test_runner_defaults_to_the_cpu_and_the_auto_dtype_here(no_accelerator: None) -> None:
    from sdflow.runner.devices.dtypes import choose_dtype

    runner = Runner()
    assert (runner.device, runner.dtype) == (torch.device("cpu"), choose_dtype(torch.device("cpu")).dtype)
