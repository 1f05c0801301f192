"""`sdflow serve --workers N`: jobs from the server's queue run on Ray workers (one local Ray), their
node, step and preview events forwarded as the in-process worker publishes them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

import ray

from sdflow.runner.scale.distributed import RayBackend
from sdflow.serve.ray_worker import RayWorker
from tests.serve_helpers import FAST, TXT2IMG, client, cpu_runner, free_port, start_server, wait

LONG = {"steps": 500, "seed": 9}  # stopped by a cancel long before its end


def job_events(http: Any, job_id: str) -> list[dict[str, Any]]:
    """``job_id``'s events over WS /api/events, from the first to its end."""
    events: list[dict[str, Any]] = []
    with http.websocket_connect(f"/api/events?since=0&job={job_id}") as socket:
        while not events or events[-1]["type"] not in ("finished", "failed", "cancelled"):
            events.append(socket.receive_json())
    return events


def shape(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must be alike wherever a job ran: each event's type, node, step and total."""
    return [(e["type"], e.get("node"), e.get("step"), e.get("total")) for e in events]


def running_pace(http: Any, job_id: str, seconds: float = 120) -> tuple[int, float]:
    """(the step the running job reached, its seconds per step), read from GET /api/jobs/{id}
    ``nodes`` over at least a second and 5 steps (events come from the worker in bursts)."""
    deadline = time.monotonic() + seconds
    first: tuple[float, int] | None = None
    while time.monotonic() < deadline:
        step = http.get(f"/api/jobs/{job_id}").json()["nodes"].get("denoised", {}).get("step")
        now = time.monotonic()
        if step and first is None:
            first = (now, step)
        elif step and first is not None and step >= first[1] + 5 and now >= first[0] + 1:
            return step, (now - first[0]) / (step - first[1])
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not go 5 steps on in {seconds}s")


@pytest.mark.slow
def test_jobs_run_on_ray_workers_with_their_events_and_a_cancel_stops_at_a_step(tmp_path: Path) -> None:
    ray.init(num_cpus=1, include_dashboard=False, logging_level="warning")
    backend = RayBackend(workers=1, device="cpu", dtype="fp32")

    def make_worker(queue: Any, settings: Any, **options: Any) -> RayWorker:
        options.pop("make_runner")
        return RayWorker(queue, settings, 1, backend=backend, **options)

    try:
        with client(tmp_path / "data", worker=True, make_worker=make_worker) as http:
            ids = [
                http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {**FAST, "seed": s}}).json()["id"]
                for s in (1, 2)
            ]
            long_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": LONG}).json()["id"]
            jobs = [wait(http, job_id, 240) for job_id in ids]
            reached, per_step = running_pace(http, long_id)
            assert http.delete(f"/api/jobs/{long_id}").status_code == 202
            cancelled_at = time.monotonic()
            after_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"]
            cancelled, after = wait(http, long_id, 60), wait(http, after_id, 120)
            after_took = time.monotonic() - cancelled_at
            ray_events = [job_events(http, job_id) for job_id in (*ids, long_id)]
            served = http.get(jobs[0]["files"][0]["url"]).content
    finally:
        ray.shutdown()
    assert [job["state"] for job in jobs] == ["finished", "finished"], [job["error"] for job in jobs]
    first, second, long = ray_events
    # the events the in-process worker publishes for the same job, in the same order
    with client(tmp_path / "local", worker=True) as http:
        local_id = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {**FAST, "seed": 1}}).json()[
            "id"
        ]
        local = job_events(http, local_id)
    assert shape(first) == shape(local), (shape(first), shape(local))
    steps = [(e["node"], e["step"], e["total"]) for e in first if e["type"] == "step"]
    assert steps == [("denoised", 1, 2), ("denoised", 2, 2)]
    assert first[1]["type"] == "started" and first[1]["worker"] == "worker-1"
    finished = [e for e in first if e["type"] == "node_finished"]
    assert {e["node"] for e in finished} >= {"ckpt", "denoised", "save"}
    assert all(isinstance(e["seconds"], float) and e["seconds"] >= 0 for e in finished)
    # the second job (another seed) reuses the checkpoint and prompts: cached on the worker
    assert {e["node"] for e in second if e["type"] == "node_cached"} >= {"ckpt", "positive"}
    # the cancel stopped the long job on its worker at a step boundary, writing nothing: the job
    # queued behind it ran at once, long before the rest of its 500 steps could have
    assert cancelled["state"] == "cancelled" and after["state"] == "finished"
    long_steps = [e for e in long if e["type"] == "step"]
    assert long_steps and reached <= long_steps[-1]["step"] < LONG["steps"]
    assert after_took < (LONG["steps"] - long_steps[-1]["step"]) * per_step / 2, (after_took, per_step)
    files = [Path(job["outputs"][0]) for job in (*jobs, after)]
    assert len(set(files)) == 3 and all(f.parent == (tmp_path / "data" / "outputs").resolve() for f in files)
    assert sorted((tmp_path / "data" / "outputs").iterdir()) == sorted(files)
    # the same picture as a run in this process
    from sdflow.serve.validation import load_job

    direct = cpu_runner(str(tmp_path / "direct")).run(
        load_job(TXT2IMG, (tmp_path / "data" / "inputs").resolve()), {**FAST, "seed": 1}
    )
    assert served == Path(direct.report.files[0]).read_bytes()


@pytest.mark.slow
def test_a_comfyui_script_follows_a_prompt_on_a_real_server_with_ray_workers(tmp_path: Path) -> None:
    """`sdflow serve --workers 1 --preview 1` on 127.0.0.1 (its own local Ray): ComfyUI's /ws
    progress and executing messages, and WS /api/events previews, come from the Ray worker."""
    pytest.importorskip("websockets")
    import httpx
    from websockets.sync.client import connect

    from tests.test_serve_comfy import comfyui_script, direct_png
    from tests.workflows import SHAPES_COMFY, comfy_api

    prompt = comfy_api(SHAPES_COMFY)
    data, port = tmp_path / "data", free_port()
    server = start_server(data, port, "--workers", "1", "--preview", "1", seconds=180)
    try:
        messages, images = comfyui_script(f"127.0.0.1:{port}", prompt)
        with connect(f"ws://127.0.0.1:{port}/api/events", open_timeout=30) as socket:
            reply = httpx.post(
                f"http://127.0.0.1:{port}/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}
            )
            job_id = reply.json()["id"]
            events = []
            while not events or events[-1]["type"] not in ("finished", "failed", "cancelled"):
                event = json.loads(socket.recv(timeout=120))
                if event.get("job") == job_id:
                    events.append(event)
    finally:
        server.terminate()
        server.wait(60)
    assert images["9"] == [direct_png(prompt, tmp_path / "direct", data)]
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 2, "3"), (2, 2, "3")]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert executing.index("4") < executing.index("3") < executing.index("8") and executing[-1] is None
    assert [m["type"] for m in messages][-3:] == ["executed", "execution_success", "executing"]
    assert events[-1]["type"] == "finished", events[-1]
    previews = [(e["step"], e["total"], e["mime"]) for e in events if e["type"] == "preview"]
    assert previews == [(1, 2, "image/jpeg"), (2, 2, "image/jpeg")]
    assert all(len(e["image"]) > 100 for e in events if e["type"] == "preview")
