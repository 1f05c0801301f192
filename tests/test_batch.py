"""Batched sweeps: items that differ in seed or prompt share one DenoiseLoop and VAEDecode run, and
give exactly the pixels, files and reports of the runs made one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

import sdflow
from sdflow.cli import main as cli
from sdflow.runner import Runner

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = ["--set", "checkpoint=builtin:tiny-sd15", "--set", "steps=3", "--quiet", "--dtype", "fp32"]


def _graph(sampler: str = "euler_ancestral") -> sdflow.Graph:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = "builtin:tiny-sd15"
    graph["schedule"]["sampler"] = sampler
    graph["schedule"]["steps"] = 3
    return graph


def _pixels(path: Path | str) -> np.ndarray:
    with PILImage.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def _runner(tmp_path: Path, name: str) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path / name))


@pytest.mark.parametrize("sampler", ["euler_ancestral", "ddpm", "dpmpp_2m"])
def test_a_batched_seed_sweep_equals_the_serial_runs_bit_for_bit(sampler: str, tmp_path: Path) -> None:
    items = [{"seed": seed} for seed in (1, 2, 3)]
    serial = [_runner(tmp_path, "serial").run(_graph(sampler), inputs=item) for item in items]

    batched = _runner(tmp_path, "batched").run_batch(_graph(sampler), items, batch=3)

    for one, many in zip(serial, batched, strict=True):
        assert torch.equal(one.tensor("denoised"), many.tensor("denoised"))
        assert torch.equal(one.tensor("decoded"), many.tensor("decoded"))
        assert np.array_equal(_pixels(one.files[0]), _pixels(many.files[0]))
    assert [Path(r.files[0]).name for r in batched] == [Path(r.files[0]).name for r in serial]


def test_a_prompt_sweep_batches_too(tmp_path: Path) -> None:
    items = [{"prompt": "a red circle", "seed": 5}, {"prompt": "a blue square", "seed": 6}]
    serial = [_runner(tmp_path, "serial").run(_graph(), inputs=item) for item in items]

    batched = _runner(tmp_path, "batched").run_batch(_graph(), items, batch=2)

    assert all(
        torch.equal(a.tensor("decoded"), b.tensor("decoded")) for a, b in zip(serial, batched, strict=True)
    )
    assert {n.id: n.batch for n in batched[1].report.nodes}["denoised"] == 2


def test_the_report_says_which_nodes_ran_as_one_batch(tmp_path: Path) -> None:
    results = _runner(tmp_path, "out").run_batch(_graph(), [{"seed": 1}, {"seed": 2}, {"seed": 3}], batch=2)

    sizes = [{n.id: n.batch for n in r.report.nodes} for r in results]
    assert [s["denoised"] for s in sizes] == [2, 2, 1]
    assert [s["decoded"] for s in sizes] == [2, 2, 1]
    assert all(s["save"] == 1 and s["noised"] == 1 for s in sizes)
    assert [r.report.inputs["seed"] for r in results] == [1, 2, 3]
    assert all(len(r.files) == 1 for r in results)


def test_items_that_differ_in_steps_run_one_by_one_with_the_same_results(tmp_path: Path) -> None:
    items = [{"seed": 1, "steps": 2}, {"seed": 1, "steps": 3}]
    serial = [_runner(tmp_path, "serial").run(_graph(), inputs=item) for item in items]

    batched = _runner(tmp_path, "batched").run_batch(_graph(), items, batch=2)

    assert all(
        torch.equal(a.tensor("decoded"), b.tensor("decoded")) for a, b in zip(serial, batched, strict=True)
    )
    assert all(n.batch == 1 for r in batched for n in r.report.nodes if n.id == "denoised")


def test_a_repeated_item_is_an_identical_re_run_as_in_a_serial_sweep(tmp_path: Path) -> None:
    results = _runner(tmp_path, "out").run_batch(_graph(), [{"seed": 4}, {"seed": 4}], batch=2)

    assert results[0].tensor("decoded") is results[1].tensor("decoded")
    assert results[0].files == results[1].files  # the second run's SaveImage is cached, as serially
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_the_command_line_batch_writes_what_the_serial_sweep_writes(tmp_path: Path, capsys) -> None:
    workflow = str(EXAMPLES / "txt2img.yaml")
    sweep = ["--sweep", "seed=1,2,3", "--set", "sampler=euler_ancestral", *TINY]
    assert cli(["run", workflow, "--output-dir", str(tmp_path / "serial"), *sweep]) == 0
    report = tmp_path / "report.json"
    argv = [
        "run",
        workflow,
        "--output-dir",
        str(tmp_path / "batched"),
        "--batch",
        "2",
        "--report",
        str(report),
    ]
    assert cli([*argv, *sweep]) == 0

    serial = sorted((tmp_path / "serial").glob("*.png"))
    batched = sorted((tmp_path / "batched").glob("*.png"))
    assert (
        [p.name for p in serial] == [p.name for p in batched] == [f"txt2img_0000{i}.png" for i in (1, 2, 3)]
    )
    assert all(np.array_equal(_pixels(a), _pixels(b)) for a, b in zip(serial, batched, strict=True))
    runs = json.loads(report.read_text())["runs"]
    assert [run["inputs"]["seed"] for run in runs] == [1, 2, 3]
    assert [len(run["files"]) for run in runs] == [1, 1, 1]


def test_a_batch_below_one_is_refused(tmp_path: Path, capsys) -> None:
    code = cli(["run", str(EXAMPLES / "txt2img.yaml"), "--batch", "0", "--output-dir", str(tmp_path), *TINY])

    assert code == 2
    assert "--batch 0" in capsys.readouterr().err


def test_the_module_level_run_batch_uses_the_shared_runner(tmp_path: Path) -> None:
    results = sdflow.run_batch(_graph(), [{"seed": 1}, {"seed": 2}], batch=2, output_dir=str(tmp_path))

    assert len(results) == 2 and all(len(r.files) == 1 for r in results)
