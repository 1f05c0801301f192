"""Many runs of one workflow without Ray: files written by the driver in job order, job affinity,
and `--workers` when Ray is not installed."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from workflows import copy_image

from sdflow.graphs.loading import load
from sdflow.runner.core.report import RunReport
from sdflow.runner.scale.jobs import Failure, PendingFile, Rendered
from sdflow.runner.scale.many import Completed, FileWriter, LocalBackend, in_job_order, run_many
from sdflow.runner.scale.schedule import AffinityScheduler

ROOT = Path(__file__).resolve().parent.parent
COPY = copy_image("copies/copy")


def rendered(name: str, data: bytes, folder: str) -> Rendered:
    token = f"{folder}/sdflow-pending-{name}.png"
    return Rendered(RunReport(files=[token]), [PendingFile(token, folder, "img", ".png", data)])


def test_files_are_numbered_in_job_order_whatever_order_the_jobs_finish_in(tmp_path):
    writer = FileWriter(str(tmp_path))
    folder = str(tmp_path.resolve())
    finished = [
        Completed(2, rendered("c", b"third", folder), "w1", 1),
        Completed(0, rendered("a", b"first", folder), "w2", 1),
        Completed(1, Failure("no such thing", "user"), "w1", 1),
        Completed(3, rendered("d", b"fourth", folder), "w2", 1),
    ]
    delivered = [writer.finish(done, {}) for done in in_job_order(finished)]
    assert [r.index for r in delivered] == [0, 1, 2, 3]
    assert [Path(f).name for r in delivered for f in r.files] == [
        "img_00001.png",
        "img_00002.png",
        "img_00003.png",
    ]
    assert [(tmp_path / f"img_0000{n}.png").read_bytes() for n in (1, 2, 3)] == [
        b"first",
        b"third",
        b"fourth",
    ]
    assert delivered[1].error == "no such thing" and delivered[1].user_error


def test_run_many_in_process_matches_serial_runs_and_goes_on_after_a_failed_run(
    tmp_path, runner, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    shutil.copy(ROOT / "examples" / "inputs" / "shapes.png", tmp_path / "b.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:120])
    (tmp_path / "copy.yaml").write_text(COPY)
    workflow = load(tmp_path / "copy.yaml")
    runs = [{"path": "a.png"}, {"path": "cut.png"}, {"path": "b.png"}]
    results = run_many(workflow, runs, LocalBackend(runner), output_dir="many")
    assert [r.ok for r in results] == [True, False, True]
    assert "image file is truncated" in results[1].error
    assert [r.files for r in results] == [["many/copies/copy_00001.png"], [], ["many/copies/copy_00002.png"]]
    for result, inputs in zip([results[0], results[2]], [runs[0], runs[2]], strict=True):
        serial = runner.run(workflow, inputs=inputs, output_dir=str(tmp_path / "serial"))
        assert Path(result.files[0]).read_bytes() == Path(serial.files[0]).read_bytes()


def test_run_many_writes_relative_to_the_current_folder_as_given(tmp_path, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    (tmp_path / "copy.yaml").write_text(COPY)
    results = run_many(load(tmp_path / "copy.yaml"), [{}], LocalBackend(runner), output_dir="out")
    assert results[0].files == ["out/copies/copy_00001.png"]
    assert (tmp_path / "out" / "copies" / "copy_00001.png").is_file()


def keys_of(prompt: str, seed: int) -> dict[str, str]:
    return {
        "ckpt": "ckpt",
        "positive": f"text:{prompt}",
        "noised": f"noise:{seed}",
        "save": f"{prompt}/{seed}",
    }


def test_jobs_sharing_a_costly_node_gather_on_one_worker():
    jobs = [keys_of(prompt, seed) for prompt in ("red", "green") for seed in (1, 2, 3)]
    scheduler = AffinityScheduler(jobs)
    scheduler.measured({"ckpt": 5.0, "positive": 0.5, "noised": 0.01, "save": 0.02})
    given: dict[str, list[int]] = {"a": [], "b": []}
    for _ in range(3):
        for worker in given:
            given[worker].append(scheduler.next_for(worker))
    prompts = {worker: {jobs[j]["positive"] for j in indices} for worker, indices in given.items()}
    assert prompts == {"a": {"text:red"}, "b": {"text:green"}}


def test_a_seed_sweep_spreads_over_every_worker_in_job_order():
    scheduler = AffinityScheduler([keys_of("red", seed) for seed in range(4)])
    assert [scheduler.next_for(w) for w in ("a", "b", "a", "b")] == [0, 1, 2, 3]
    assert scheduler.next_for("a") is None


def test_a_repeated_job_waits_for_the_worker_that_has_it_cached():
    scheduler = AffinityScheduler([keys_of("red", 1), keys_of("red", 1), keys_of("red", 2)])
    for worker in ("a", "b"):
        scheduler.add_worker(worker)
    assert scheduler.next_for("a") == 0
    assert scheduler.next_for("b") == 2  # not job 1, which repeats job 0 on "a"
    assert scheduler.next_for("b") is None
    assert scheduler.next_for("a") == 1


def test_a_job_retried_after_its_worker_died_goes_to_another_worker():
    scheduler = AffinityScheduler([keys_of("red", 1), keys_of("red", 2)])
    for worker in ("a", "b"):
        scheduler.add_worker(worker)
    assert scheduler.next_for("a") == 0
    scheduler.remove_worker("a")
    scheduler.retry(0, "a")
    scheduler.add_worker("c")
    assert scheduler.next_for("c") == 0
    assert scheduler.next_for("b") == 1


def test_a_job_that_killed_every_remaining_worker_may_still_run_on_one():
    scheduler = AffinityScheduler([keys_of("red", 1)])
    scheduler.add_worker("a")
    assert scheduler.next_for("a") == 0
    scheduler.retry(0, "a")
    assert scheduler.next_for("a") == 0


def test_workers_without_ray_installed_exit_2_saying_how_to_install_it(monkeypatch, capsys):
    from sdflow.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    code = main(["run", str(ROOT / "examples" / "txt2img.yaml"), "--workers", "2", "--quiet"])
    assert code == 2
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err


def test_an_identical_second_run_writes_nothing_and_reports_the_first_runs_files(
    tmp_path, runner, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    (tmp_path / "copy.yaml").write_text(COPY)
    workflow = load(tmp_path / "copy.yaml")
    first = run_many(workflow, [{}], LocalBackend(runner), output_dir="out")
    again = run_many(workflow, [{}], LocalBackend(runner), output_dir="out")  # as Runner.run does
    assert again[0].report.status()["save"] == "cached"
    assert again[0].files == first[0].files == ["out/copies/copy_00001.png"]
    assert [p.name for p in (tmp_path / "out" / "copies").iterdir()] == ["copy_00001.png"]


def test_a_bug_in_one_run_is_one_line_naming_the_node_with_the_traceback_kept(tmp_path, runner, monkeypatch):
    from sdflow.nodes.library.load_image import LoadImage

    def broken(self, ctx):
        raise RuntimeError("sizes do not match\nmore detail")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LoadImage, "run", broken)
    shutil.copy(ROOT / "examples" / "inputs" / "red_circle.png", tmp_path / "a.png")
    (tmp_path / "copy.yaml").write_text(COPY)
    [result] = run_many(load(tmp_path / "copy.yaml"), [{}], LocalBackend(runner), output_dir="out")
    assert result.failure.kind == "bug" and not result.user_error
    assert (
        result.error
        == "internal error while running node 'picture' (LoadImage): RuntimeError: sizes do not match"
    )
    [line] = result.failure.lines("run 1")
    assert line.startswith("run 1: internal error") and line.endswith("SDFLOW_DEBUG=1 for the traceback)")
    assert result.failure.lines("run 1", debug=True)[0].startswith("Traceback (most recent call last)")
