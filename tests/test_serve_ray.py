"""`sdflow serve --workers N`: jobs from the server's queue run on Ray workers (one local Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')

import ray

from sdflow.runner.scale.distributed import RayBackend
from sdflow.serve.ray_worker import RayWorker
from tests.serve_helpers import FAST, TXT2IMG, client, cpu_runner, wait


@pytest.mark.slow
def test_jobs_run_on_ray_workers_and_the_queue_stays_in_the_servers_database(tmp_path: Path) -> None:
    ray.init(num_cpus=1, include_dashboard=False, logging_level="warning")
    backend = RayBackend(workers=1, device="cpu", dtype="fp32")

    def make_worker(queue: Any, settings: Any, **options: Any) -> RayWorker:
        options.pop("make_runner")
        return RayWorker(queue, settings, 1, backend=backend, **options)

    try:
        with client(tmp_path / "data", worker=True, make_worker=make_worker) as http:
            ids = [
                http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {**FAST, "seed": s}}).json()["id"]
                for s in (1, 2, 3)
            ]
            assert http.delete(f"/api/jobs/{ids[2]}").status_code in (200, 202)
            jobs = [wait(http, job_id, 240) for job_id in ids[:2]]
            cancelled = wait(http, ids[2], 240)
            with http.websocket_connect("/api/events?since=0&job=" + ids[0]) as socket:
                types = []
                while not types or types[-1] != "finished":
                    types.append(socket.receive_json()["type"])
            served = http.get(jobs[0]["files"][0]["url"]).content
    finally:
        ray.shutdown()
    assert [job["state"] for job in jobs] == ["finished", "finished"], [job["error"] for job in jobs]
    assert cancelled["state"] == "cancelled"
    assert types == ["queued", "started", "output", "finished"]
    files = [Path(job["outputs"][0]) for job in jobs]
    assert len(set(files)) == 2 and all(f.parent == (tmp_path / "data" / "outputs").resolve() for f in files)
    assert sorted((tmp_path / "data" / "outputs").iterdir()) == sorted(files)
    # the same picture as a run in this process
    from sdflow.serve.validation import load_job

    direct = cpu_runner(str(tmp_path / "direct")).run(
        load_job(TXT2IMG, (tmp_path / "data" / "inputs").resolve()), {**FAST, "seed": 1}
    )
    assert served == Path(direct.report.files[0]).read_bytes()
