"""Crash safety of a real `sdflow serve` process: SIGKILL mid-run loses no accepted job, runs none
twice and overwrites no file; SIGTERM stops at a step boundary, keeps the queue and exits cleanly."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import httpx

from tests.serve_helpers import TXT2IMG, free_port, start_server

STEPS = 12


def _running_step(http: Any, base: str) -> tuple[str, int] | None:
    """(id, step) of the job being denoised, if one is."""
    running = http.get(f"{base}/api/jobs", params={"state": "running"}).json()["jobs"]
    for job in running:
        step = http.get(f"{base}/api/jobs/{job['id']}").json()["nodes"].get("denoised", {}).get("step")
        if step is not None:
            return job["id"], step
    return None


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.slow
def test_sigkill_mid_run_with_ten_queued_loses_none_runs_none_twice_overwrites_nothing(
    tmp_path: Path,
) -> None:
    http, port, data = httpx.Client(timeout=60), free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    process = start_server(data, port)
    try:
        ids = [
            http.post(
                f"{base}/api/jobs", json={"workflow": TXT2IMG, "inputs": {"steps": STEPS, "seed": s}}
            ).json()["id"]
            for s in range(11)
        ]
        deadline, killed_during = time.monotonic() + 120, None
        while killed_during is None:
            assert time.monotonic() < deadline, "no job reached its denoising loop"
            finished = http.get(f"{base}/api/jobs", params={"state": "finished"}).json()["jobs"]
            found = _running_step(http, base) if finished else None
            if found is not None and found[1] <= STEPS // 2:
                killed_during = found[0]
                process.send_signal(signal.SIGKILL)  # mid-denoise, with the rest still queued
            time.sleep(0.02)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = {job["id"]: job["outputs"][0] for job in finished}
    digests = {path: _digest(path) for path in before.values()}
    assert killed_during not in before and len(before) < 11
    process = start_server(data, port)
    try:
        deadline = time.monotonic() + 150
        while http.get(f"{base}/api/queue").json()["jobs"]["finished"] < 11:
            assert time.monotonic() < deadline, "the jobs did not all finish after the restart"
            time.sleep(0.2)
        jobs = {job_id: http.get(f"{base}/api/jobs/{job_id}").json() for job_id in ids}
    finally:
        process.terminate()
        assert process.wait(60) == 0
    assert all(job["state"] == "finished" and len(job["outputs"]) == 1 for job in jobs.values())
    outputs = [job["outputs"][0] for job in jobs.values()]
    assert len(set(outputs)) == 11
    # none ran twice: no file beyond one per job; the interrupted one ran again from the start
    assert sorted(str(p) for p in (data / "outputs").glob("*.png")) == sorted(outputs)
    assert jobs[killed_during]["attempts"] == 2
    assert all(job["attempts"] == 1 for job_id, job in jobs.items() if job_id in before)
    # finished jobs kept their outputs and reports; no file was overwritten
    assert all(jobs[job_id]["outputs"][0] == path for job_id, path in before.items())
    assert all(_digest(path) == digest for path, digest in digests.items())
    assert all(job["report"]["inputs"]["seed"] == index for index, job in enumerate(jobs.values()))


@pytest.mark.slow
def test_sigterm_stops_at_a_step_keeps_the_queue_and_exits_cleanly(tmp_path: Path) -> None:
    http, port, data = httpx.Client(timeout=60), free_port(), tmp_path / "data"
    base = f"http://127.0.0.1:{port}"
    process = start_server(data, port)
    try:
        body = {"workflow": TXT2IMG, "inputs": {"steps": 500, "seed": 3}}
        long_job = http.post(f"{base}/api/jobs", json=body).json()["id"]
        queued = http.post(f"{base}/api/jobs", json=body).json()["id"]
        deadline = time.monotonic() + 120
        while _running_step(http, base) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    with sqlite3.connect(data / "queue.sqlite") as db:
        states = dict(db.execute("SELECT id, state FROM jobs").fetchall())
    assert states == {long_job: "queued", queued: "queued"}
    assert list((data / "outputs").glob("*")) == []
