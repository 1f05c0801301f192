"""`sdflow serve`: the job queue on disk, the JSON API, the worker's outputs, auth and limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from sdflow.cli import main
from sdflow.graphs.yaml_io import loads
from sdflow.serve.app import create_app
from sdflow.serve.queue import JobQueue
from tests.serve_helpers import FAST, TXT2IMG
from tests.serve_helpers import client as _client
from tests.serve_helpers import cpu_runner as _cpu_runner
from tests.serve_helpers import wait as _wait


def test_submitted_job_writes_the_same_png_as_a_direct_run(tmp_path: Path) -> None:
    with _client(tmp_path / "data", worker=True) as client:
        reply = client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST})
        assert reply.status_code == 201
        assert reply.json()["position"] == 0
        job = _wait(client, reply.json()["id"])
    assert job["state"] == "finished", job["error"]
    served = [Path(p) for p in job["outputs"]]
    assert len(served) == 1 and served[0].is_file()
    assert served[0].resolve().is_relative_to((tmp_path / "data" / "outputs").resolve())
    workflow = loads(TXT2IMG)
    workflow.base_dir = str((tmp_path / "data" / "inputs").resolve())  # API jobs' paths resolve there
    direct = _cpu_runner(str(tmp_path / "direct")).run(workflow, FAST)
    assert served[0].read_bytes() == Path(direct.report.files[0]).read_bytes()
    assert job["report"]["inputs"]["steps"] == 2


def test_invalid_workflow_is_422_with_located_errors(tmp_path: Path) -> None:
    broken = TXT2IMG.replace("type: VAEDecode", "type: VAEDecodee")
    with _client(tmp_path) as client:
        reply = client.post("/api/jobs", json={"workflow": broken, "inputs": {}})
        assert reply.status_code == 422
        [error] = reply.json()["errors"]
        line = next(i for i, text in enumerate(broken.splitlines(), 1) if "VAEDecodee" in text)
        assert (error["file"], error["line"], error["node"]) == ("<workflow>", line, "decoded")
        assert "VAEDecodee" in error["message"]
        assert client.get("/api/jobs").json()["jobs"] == []


def test_out_of_range_input_is_422_like_validate(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        reply = client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {"steps": -3}})
        assert reply.status_code == 422
        assert any("steps" in (e["field"] or "") + e["message"] for e in reply.json()["errors"])


def test_queued_jobs_survive_a_restart(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        ids = [
            client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"] for _ in "ab"
        ]
    with _client(tmp_path) as client:
        jobs = client.get("/api/jobs", params={"state": "queued"}).json()["jobs"]
        assert sorted(job["id"] for job in jobs) == sorted(ids)
        assert client.get(f"/api/jobs/{ids[0]}").json()["inputs"] == FAST


def test_jobs_queued_before_a_restart_run_after_it(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        job_id = client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"]
    with _client(tmp_path, worker=True) as client:
        job = _wait(client, job_id)
    assert job["state"] == "finished", job["error"]
    assert Path(job["outputs"][0]).is_file()


class _BrokenRunner:
    """A runner whose node code has a bug: every run raises."""

    sandbox = None

    def subscribe(self, listener: Any) -> None:
        pass

    def run(self, workflow: Any, inputs: dict[str, Any]) -> Any:
        raise RuntimeError("boom\nsecond line")


def test_job_whose_run_raises_fails_and_the_server_keeps_serving(tmp_path: Path) -> None:
    app = create_app(tmp_path, make_runner=lambda output_dir: _BrokenRunner())
    with TestClient(app) as client:
        first, second = (
            client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"] for _ in "ab"
        )
        jobs = [_wait(client, first), _wait(client, second)]
    assert [job["state"] for job in jobs] == ["failed", "failed"]
    assert "RuntimeError: boom" in jobs[0]["error"] and "\n" not in jobs[0]["error"]


def test_job_left_running_is_queued_again_on_start(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path)
    job_id, _ = queue.submit(TXT2IMG, FAST)
    assert queue.claim().id == job_id  # the server "crashes" while this job runs
    assert queue.get(job_id).state == "running"
    queue.close()
    with _client(tmp_path) as client:
        assert client.get(f"/api/jobs/{job_id}").json()["state"] == "queued"


def test_claim_takes_highest_priority_then_oldest(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path)
    first, _ = queue.submit("a", {})
    second, _ = queue.submit("b", {})
    urgent, position = queue.submit("c", {}, priority=5)
    assert position == 0
    assert [queue.claim().id for _ in range(3)] == [urgent, first, second]
    assert queue.claim() is None


def test_delete_cancels_a_queued_job(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        job_id = client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"]
        assert client.delete(f"/api/jobs/{job_id}").json() == {"id": job_id, "state": "cancelled"}
        assert client.get(f"/api/jobs/{job_id}").json()["state"] == "cancelled"
        assert client.delete(f"/api/jobs/{job_id}").status_code == 409
        assert client.get("/api/jobs", params={"state": "queued"}).json()["jobs"] == []


def test_patch_changes_a_queued_jobs_priority(tmp_path: Path) -> None:
    queue_job = {"workflow": TXT2IMG, "inputs": FAST}
    with _client(tmp_path) as client:
        first, second = (client.post("/api/jobs", json=queue_job).json()["id"] for _ in "ab")
        reply = client.patch(f"/api/jobs/{second}", json={"priority": 3})
        assert reply.status_code == 200 and reply.json()["priority"] == 3
        assert client.patch(f"/api/jobs/{second}", json={"priority": "3"}).status_code == 422
        assert client.patch("/api/jobs/nope", json={"priority": 1}).status_code == 404
    queue = JobQueue(tmp_path)
    assert [queue.claim().id for _ in "ab"] == [second, first]


def test_token_is_required_on_every_route(tmp_path: Path) -> None:
    with _client(tmp_path, token="s3cret") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = client.get("/api/jobs", headers=headers)
            assert reply.status_code == 401 and "token" in reply.json()["error"]
        assert client.get("/api/nodes").status_code == 401
        assert client.get("/api/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_body_over_max_body_is_413(tmp_path: Path) -> None:
    with _client(tmp_path, max_body=1000) as client:
        reply = client.post("/api/jobs", json={"workflow": "x" * 5000, "inputs": {}})
        assert reply.status_code == 413 and "error" in reply.json()


def test_unknown_job_is_404_json(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        for reply in (client.get("/api/jobs/nope"), client.delete("/api/jobs/nope")):
            assert reply.status_code == 404 and "nope" in reply.json()["error"]


def test_unknown_route_and_method_answer_json(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        assert client.get("/api/nowhere").status_code == 404
        assert "error" in client.get("/api/nowhere").json()
        reply = client.put("/api/jobs")
        assert reply.status_code == 405 and "error" in reply.json()


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[1, 2]", 422),
        (b'{"workflow": 3}', 422),
        (b'{"workflow": "version: 1", "inputs": []}', 422),
        (b'{"workflow": "version: 1", "priority": "high"}', 422),
        (b'{"workflow": "version: 1", "extra": 1}', 422),
        (b'{"workflow": ": : :\\n\\t-"}', 422),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'{"workflow": "version: 1", "inputs": {"cfg": NaN}}', 400),
    ],
)
def test_bad_bodies_get_a_4xx_json_answer(tmp_path: Path, body: bytes, status: int) -> None:
    with _client(tmp_path) as client:
        reply = client.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
        assert reply.status_code == status
        assert "error" in reply.json()


def test_bad_state_filter_is_422(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        assert client.get("/api/jobs", params={"state": "sleeping"}).status_code == 422
        assert client.get("/api/jobs", params={"limit": "-1"}).status_code == 422


def test_nodes_lists_node_types_as_json(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        nodes = {node["type"]: node for node in client.get("/api/nodes").json()["nodes"]}
    assert nodes["VAEDecode"]["outputs"] == {"image": "Image"}
    steps = next(field for field in nodes["Scheduler"]["inputs"] if field["name"] == "steps")
    assert steps["type"] == "int" and steps["link"] is False


def test_token_file_is_read_and_an_empty_one_refused(tmp_path: Path) -> None:
    from argparse import Namespace

    from sdflow.cli.serve import check_options

    good, empty = tmp_path / "token", tmp_path / "empty"
    good.write_text("abc123\n")
    empty.write_text("\n")
    args = Namespace(host="0.0.0.0", port=8188, token=None, token_file=str(good), max_body="1KB")
    assert check_options(args) == 1024 and args.token == "abc123"
    assert main(["serve", "--host", "0.0.0.0", "--token-file", str(empty)]) == 2


def test_non_loopback_host_without_token_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err


def test_the_queue_commits_accepted_jobs_synced_or_not_as_asked(tmp_path: Path) -> None:
    for sync in ("full", "normal"):
        queue = JobQueue(tmp_path / sync, sync)
        job_id, _ = queue.submit(TXT2IMG, FAST)
        queue.close()
        assert JobQueue(tmp_path / sync).get(job_id).state == "queued"
    with pytest.raises(ValueError, match="sync"):
        JobQueue(tmp_path / "x", "off; DROP TABLE jobs")


def test_the_servers_sync_option_reaches_the_queue(tmp_path: Path) -> None:
    for options, expected in (({}, "NORMAL"), ({"sync": "full"}, "FULL")):
        with _client(tmp_path / expected, **options) as client:
            assert client.app.state.queue.sync == expected


def test_an_accepted_job_runs_from_the_plan_its_validation_made(tmp_path: Path, monkeypatch) -> None:
    from sdflow.runner.core import executor

    planned = []
    plan_steps = executor.plan_steps
    monkeypatch.setattr(executor, "plan_steps", lambda *a, **k: planned.append(1) or plan_steps(*a, **k))
    data = tmp_path / "data"
    with _client(data, worker=True) as client:
        job = _wait(client, client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST}).json()["id"])
        assert job["state"] == "finished" and len(job["outputs"]) == 1
        assert planned == []  # the runner did not validate and plan the job again
    queue = JobQueue(data)
    before_restart = queue.submit(TXT2IMG, {**FAST, "seed": 6})[0]  # no plan kept for it
    queue.close()
    with _client(data, worker=True) as client:
        job = _wait(client, before_restart)
    assert job["state"] == "finished" and planned == [1]


def test_a_workflow_text_sent_again_skips_only_the_graph_check(tmp_path: Path, monkeypatch) -> None:
    """The graph of a text the server checked before is not checked again (``Shape``), but every
    job's inputs and files are: an input out of range, or a picture deleted since, is still 422."""
    from PIL import Image

    from sdflow.runner.core import plan
    from tests.workflows import copy_image

    graph_checks = []
    validate = plan.validate
    monkeypatch.setattr(plan, "validate", lambda workflow: graph_checks.append(1) or validate(workflow))
    text = copy_image("kept-shape") + "\n# sent only here\n"
    data = tmp_path / "data"
    with _client(data) as client:
        Image.new("RGB", (8, 8), "red").save(data / "inputs" / "a.png")
        Image.new("RGB", (8, 8), "blue").save(data / "inputs" / "b.png")
        first = client.post("/api/jobs", json={"workflow": text})
        second = client.post("/api/jobs", json={"workflow": text, "inputs": {"path": "b.png"}})
        (data / "inputs" / "a.png").unlink()
        gone = client.post("/api/jobs", json={"workflow": text})
        wrong = client.post("/api/jobs", json={"workflow": text, "inputs": {"path": 3}})
        outside = client.post("/api/jobs", json={"workflow": text, "inputs": {"path": "/etc/passwd"}})
    assert (first.status_code, second.status_code, graph_checks) == (201, 201, [1])
    assert gone.status_code == 422 and "image file not found" in gone.json()["errors"][0]["message"]
    assert gone.json()["errors"][0]["node"] == "picture"
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["message"]
    assert outside.status_code == 422
