"""Sweeps on Ray workers: identical to a serial run, surviving a killed worker and a failing run.

One local Ray (2 CPUs) and one 2-worker pool serve the whole module; the commands borrow it (see
``borrowed``), and the Ctrl-C test, which stops it, runs last.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from itertools import chain
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

from workflows import copy_image  # noqa: E402

from sdflow.graphs.loading import load  # noqa: E402
from sdflow.runner.core.events import StepProgress  # noqa: E402
from sdflow.runner.core.executor import Runner  # noqa: E402
from sdflow.runner.scale.distributed import RayBackend  # noqa: E402
from sdflow.runner.scale.many import run_many  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TXT2IMG = ROOT / "examples" / "txt2img.yaml"
COPY = copy_image("copy")


class ExitOnFirstStep:
    """A worker listener that kills its worker process (no clean-up, like a crash) at a denoising
    step, while ``folder/arm`` exists and only once: the first to create ``folder/died`` dies."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, event: object) -> None:
        if not isinstance(event, StepProgress) or not (self.folder / "arm").exists():
            return
        try:
            fd = os.open(self.folder / "died", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)


@pytest.fixture(scope="module")
def trap(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trap")


@pytest.fixture(scope="module")
def pool(trap: Path):
    """Two CPU workers on a local Ray; their listener kills one of them while ``trap/arm`` exists."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the listener, for the workers
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    backend = RayBackend(workers=2, device="cpu", worker_listeners=[ExitOnFirstStep(trap)])
    try:
        yield backend.start()
    finally:
        backend.close()
        ray.shutdown()


@pytest.fixture
def borrowed(pool, monkeypatch) -> list[tuple]:
    """Commands run with ``--workers`` get the module's pool instead of starting their own workers
    (each would import torch and diffusers again: seconds per worker). Everything else runs as it
    does for a user, on real Ray workers; the list records how the command asked for its pool."""
    asked: list[tuple] = []

    class Borrowed:
        allow_pickle = False

        def __init__(self, workers, address=None, device="auto", dtype=None, **options) -> None:
            asked.append((workers, address, device, dtype))

        def start(self) -> Borrowed:
            return self

        def map(self, task, jobs):
            return pool.map(task, jobs)

        def close(self) -> None:  # the pool outlives the command
            pass

        __enter__ = start

        def __exit__(self, *exc_info) -> None:
            pass

    monkeypatch.setattr("sdflow.runner.scale.distributed.RayBackend", Borrowed)
    return asked


def txt2img():
    """The shipped txt2img example, at 4 steps by default instead of 20."""
    workflow = load(TXT2IMG)
    workflow.inputs["steps"].default = 4
    return workflow


def serial(workflow, runs, folder: Path) -> list[list[str]]:
    runner = Runner(device="cpu", output_dir=str(folder))
    return [runner.run(workflow, inputs=inputs).files for inputs in runs]


def same_files(parallel: list[list[str]], serial_files: list[list[str]]) -> None:
    """Same names, in the same runs, with the same bytes (pixels and embedded metadata)."""
    assert [[Path(p).name for p in files] for files in parallel] == [
        [Path(p).name for p in files] for files in serial_files
    ]
    for ours, theirs in zip(chain(*parallel), chain(*serial_files), strict=True):
        assert Path(ours).read_bytes() == Path(theirs).read_bytes()


def test_a_two_worker_sweep_equals_the_serial_sweep_pixel_for_pixel(pool, tmp_path):
    workflow = txt2img()
    runs = [
        {"seed": seed, "prompt": prompt}
        for prompt in ("a red circle on a blue background", "a yellow square on a black background")
        for seed in (1, 2)
    ]
    results = run_many(workflow, runs, pool, output_dir=str(tmp_path / "ray"))
    assert all(r.ok for r in results)
    assert {r.worker for r in results} == {"worker-1", "worker-2"}
    same_files([r.files for r in results], serial(workflow, runs, tmp_path / "serial"))
    # each worker loaded the checkpoint once: later runs found it cached
    loads = [r.worker for r in results if r.report.status()["ckpt"] == "ran"]
    assert sorted(loads) == ["worker-1", "worker-2"]
    # runs sharing a prompt went to the same worker, so each prompt was encoded once
    prompts = {r.worker: set() for r in results}
    for r in results:
        prompts[r.worker].add(r.inputs["prompt"])
    assert sorted(len(p) for p in prompts.values()) == [1, 1]
    assert sum(r.report.status()["positive"] == "ran" for r in results) == 2


def test_a_controlnet_sweep_on_two_workers_equals_the_serial_sweep(pool, tmp_path):
    """ApplyControlNet's control travels with the conditioning to a worker as it does in one process."""
    workflow = load(ROOT / "examples" / "controlnet.yaml")
    workflow.inputs["steps"].default = 4
    runs = [{"seed": seed, "strength": strength} for strength in (1.0, 0.5) for seed in (1, 2)]
    results = run_many(workflow, runs, pool, output_dir=str(tmp_path / "ray"))
    assert all(r.ok for r in results)
    serial_files = serial(workflow, runs, tmp_path / "serial")
    same_files([r.files for r in results], serial_files)
    weaker = [Path(files[0]).read_bytes() for files in serial_files]
    assert weaker[0] != weaker[2]  # the strength really reaches the loop


def test_a_worker_killed_mid_run_has_its_run_retried_on_another(pool, trap, tmp_path):
    workflow = txt2img()
    runs = [{"seed": seed} for seed in range(10, 13)]
    (trap / "arm").touch()
    try:
        results = run_many(workflow, runs, pool, output_dir=str(tmp_path / "ray"))
    finally:
        (trap / "arm").unlink()
    dead_pid = int((trap / "died").read_text())
    assert all(r.ok for r in results)
    retried = [r for r in results if r.attempts == 2]
    assert len(retried) == 1
    assert [r.attempts for r in results].count(1) == 2
    assert "worker-3" in pool.actors  # the dead worker's replacement
    pids = {ray.get(actor.pid.remote()) for actor in pool.actors.values()}
    assert dead_pid not in pids
    same_files([r.files for r in results], serial(workflow, runs, tmp_path / "serial"))
    assert not list((tmp_path / "ray").glob(".tmp-*"))


def test_a_run_failing_on_a_user_mistake_is_reported_and_the_others_go_on(pool, tmp_path):
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    # a picture cut short passes the header check made up front, and fails when decoded
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:120])
    (tmp_path / "copy.yaml").write_text(COPY)
    workflow = load(tmp_path / "copy.yaml")
    runs = [{"path": "a.png"}, {"path": "cut.png"}, {"path": "a.png"}]
    results = run_many(workflow, runs, pool, output_dir=str(tmp_path / "out"))
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].user_error
    assert "node 'picture', field 'path'" in results[1].error
    assert "image file is truncated" in results[1].error
    assert [Path(p).name for r in results for p in r.files] == ["copy_00001.png", "copy_00001.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy_00001.png"]


def test_one_gpu_per_worker_where_the_cluster_has_gpus():
    from sdflow.errors import UserError

    assert RayBackend(workers=2)._gpus_per_worker({"CPU": 8, "GPU": 2}) == 1
    assert RayBackend(workers=2)._gpus_per_worker({"CPU": 8}) == 0
    assert RayBackend(workers=2, device="cpu")._gpus_per_worker({"CPU": 8, "GPU": 2}) == 0
    with pytest.raises(UserError, match="3 workers need a GPU each; the Ray cluster has 2"):
        RayBackend(workers=3)._gpus_per_worker({"CPU": 8, "GPU": 2})
    with pytest.raises(UserError, match="no GPU"):
        RayBackend(workers=1, device="cuda")._gpus_per_worker({"CPU": 8})


def test_cpu_workers_compute_in_the_dtype_this_process_settles_auto_to():
    """A worker's own bf16 probe, measured under another load, could settle 'auto' otherwise."""
    import torch

    from sdflow.runner.devices.dtypes import choose_dtype, dtype_name

    here = dtype_name(choose_dtype(torch.device("cpu"), "auto").dtype)
    assert RayBackend(workers=2, device="cpu").worker_dtype() == here
    assert RayBackend(workers=2, device="cpu", dtype="fp32").worker_dtype() == "fp32"
    assert RayBackend(workers=2).worker_dtype() is None  # device auto: each worker's own hardware


def test_a_pool_larger_than_the_cluster_is_refused_rather_than_left_waiting(pool):
    from sdflow.errors import UserError

    with pytest.raises(UserError, match="3 workers need 3 CPUs; the Ray cluster has 2"):
        RayBackend(workers=3, device="cpu").start()


def test_the_command_line_spreads_a_sweep_reports_workers_and_exits_2_on_a_failed_run(
    borrowed, tmp_path, capsys
):
    from sdflow.cli import main

    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    shutil.copy(ROOT / "examples" / "inputs" / "shapes.png", tmp_path / "b.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:120])
    (tmp_path / "copy.yaml").write_text(COPY)
    out = tmp_path / "out"
    argv = [str(tmp_path / "copy.yaml"), "--sweep", "path=a.png,cut.png,b.png", "--output-dir", str(out)]
    code = main(["run", *argv, "--workers", "2", "--report", str(tmp_path / "r.json"), "--quiet"])
    assert borrowed == [(2, None, "auto", "auto")]  # workers, address, device, dtype
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out.split() == [str(out / "copy_00001.png"), str(out / "copy_00002.png")]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cut.png" in errors[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert [run.get("error") is None for run in report["runs"]] == [True, False, True]
    assert all(run["worker"].startswith("worker-") for run in report["runs"])
    assert [n["id"] for n in report["runs"][2]["nodes"]] == ["picture", "save"]
    # the same pictures, under the same names, as a serial run of the runs that worked
    assert (
        main(
            [
                "run",
                str(tmp_path / "copy.yaml"),
                "--set",
                "path=a.png",
                "--output-dir",
                str(tmp_path / "s"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "s" / "copy_00001.png").read_bytes() == (out / "copy_00001.png").read_bytes()


def test_golden_check_on_workers_prints_what_a_serial_check_prints(borrowed, tmp_path, capsys):
    from sdflow.cli import main

    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    shutil.copy(ROOT / "examples" / "inputs" / "shapes.png", tmp_path / "b.png")
    files = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(COPY.replace('"a.png"', f'"{name}.png"'))
        files.append(str(tmp_path / f"{name}.yaml"))
    goldens = ["--dir", str(tmp_path / "goldens")]
    assert main(["golden", "update", *files, *goldens]) == 0
    shutil.copy(tmp_path / "a.png", tmp_path / "b.png")  # b's picture changes: its check fails
    capsys.readouterr()
    assert main(["golden", "check", *files, *goldens, "--artifacts", str(tmp_path / "serial")]) == 1
    serial = capsys.readouterr().out
    spread = ["--artifacts", str(tmp_path / "spread"), "--workers", "2"]
    assert main(["golden", "check", *files, *goldens, *spread]) == 1
    assert borrowed == [(2, None, "cpu", None)]
    assert capsys.readouterr().out == serial.replace(str(tmp_path / "serial"), str(tmp_path / "spread"))
    assert "1 passed, 1 failed" in serial
    written = sorted(p.name for p in (tmp_path / "spread" / "b").iterdir())
    assert written == sorted(p.name for p in (tmp_path / "serial" / "b").iterdir()) != []


def test_ctrl_c_stops_the_workers_and_leaves_no_partial_file(pool, tmp_path):
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    (tmp_path / "copy.yaml").write_text(COPY)
    workflow = load(tmp_path / "copy.yaml")
    pids = {ray.get(actor.pid.remote()) for actor in pool.actors.values()}

    def interrupt(result):
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_many(workflow, [{"path": "a.png"}] * 8, pool, output_dir=str(out), on_result=interrupt)
    assert pool.actors == {}
    assert [p.name for p in out.iterdir()] == ["copy_00001.png"]  # the one run delivered, whole
    for pid in pids:
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    import time

    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True
