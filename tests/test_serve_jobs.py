"""`sdflow serve` job control: cancelling a running job at a step boundary, rerun, pause and resume,
sweeps, PNG submissions, uploads and the file sandbox of API jobs, outputs, models, webhooks."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from sdflow.serve.queue import JobQueue
from tests.conftest import EXAMPLES
from tests.serve_helpers import FAST, TXT2IMG, client, wait

IMG2IMG = (EXAMPLES / "img2img.yaml").read_text()
PICTURE = EXAMPLES / "inputs" / "red_circle.png"


def _submit(http: Any, **body: Any) -> dict[str, Any]:
    reply = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": FAST, **body})
    assert reply.status_code == 201, reply.text
    return reply.json()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_cancelling_a_running_job_stops_it_at_a_step_and_writes_no_file(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        job_id = _submit(http, inputs={"steps": 400, "seed": 1})["id"]
        with http.websocket_connect(f"/api/events?since=0&job={job_id}") as socket:
            events = [socket.receive_json()]
            while events[-1]["type"] != "step":
                events.append(socket.receive_json())
            reply = http.delete(f"/api/jobs/{job_id}")
            assert reply.status_code == 202 and reply.json()["cancelling"] is True
            while events[-1]["type"] not in ("finished", "failed", "cancelled"):
                events.append(socket.receive_json())
        job = wait(http, job_id)
        assert job["state"] == "cancelled" and job["outputs"] is None
        last_step = max(e["step"] for e in events if e["type"] == "step")
        assert last_step < 400  # it stopped at a step boundary, not at the end
        assert "output" not in [e["type"] for e in events]
        assert _files(tmp_path / "outputs") == []
        # the worker goes on with the next job, its runner warm
        assert wait(http, _submit(http)["id"])["state"] == "finished"


def test_rerun_queues_the_same_job_again_and_writes_a_new_file(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        first = wait(http, _submit(http, priority=2)["id"])
        reply = http.post(f"/api/jobs/{first['id']}/rerun")
        assert reply.status_code == 201 and reply.json()["rerun_of"] == first["id"]
        again = wait(http, reply.json()["id"])
        assert http.post("/api/jobs/nope/rerun").status_code == 404
    assert again["state"] == "finished" and (again["inputs"], again["priority"]) == (first["inputs"], 2)
    # the same job again on the warm runner: every node, SaveImage too, comes from the cache
    assert again["rerun_of"] == first["id"] and again["outputs"] == first["outputs"]
    assert {node["state"] for node in again["nodes"].values()} == {"cached"}


def test_a_paused_queue_starts_nothing_until_resumed_and_stays_paused_across_restarts(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        assert http.post("/api/queue/pause").json()["paused"] is True
        job_id = _submit(http)["id"]
        time.sleep(1.5)
        assert http.get(f"/api/jobs/{job_id}").json()["state"] == "queued"
    with client(tmp_path, worker=True) as http:
        status = http.get("/api/queue").json()
        assert status["paused"] is True and status["jobs"]["queued"] == 1
        assert http.post("/api/queue/resume").json()["paused"] is False
        assert wait(http, job_id)["state"] == "finished"


def test_a_sweep_queues_one_job_per_combination(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        reply = _submit(http, sweep={"seed": [1, 2, 3], "cfg": [3.0, 5.0]})
        assert len(reply["jobs"]) == 6 and reply["id"] == reply["jobs"][0]["id"]
        jobs = [http.get(f"/api/jobs/{j['id']}").json() for j in reply["jobs"]]
        assert [(j["inputs"]["seed"], j["inputs"]["cfg"]) for j in jobs] == [
            (s, c) for s in (1, 2, 3) for c in (3.0, 5.0)
        ]
        assert all(j["inputs"]["steps"] == 2 for j in jobs)
        bad = http.post("/api/jobs", json={"workflow": TXT2IMG, "sweep": {"seed": [1, "x"]}})
        assert bad.status_code == 422 and http.get("/api/queue").json()["jobs"]["queued"] == 6
        assert http.post("/api/jobs", json={"workflow": TXT2IMG, "sweep": {"seed": []}}).status_code == 422


def test_a_png_sdflow_wrote_is_a_workflow_with_its_runs_inputs(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        first = wait(http, _submit(http, inputs={"steps": 2, "seed": 11})["id"])
        png = Path(first["outputs"][0]).read_bytes()
        form = {"inputs": json.dumps({"steps": 3})}
        reply = http.post("/api/jobs", files={"workflow": ("picture.png", png, "image/png")}, data=form)
        assert reply.status_code == 201, reply.text
        job = wait(http, reply.json()["id"])
        yaml_form = http.post("/api/jobs", files={"workflow": ("w.yaml", TXT2IMG.encode())}, data=form)
        assert yaml_form.status_code == 201
        not_sdflow = http.post("/api/jobs", files={"workflow": ("p.png", PICTURE.read_bytes())})
        assert not_sdflow.status_code == 422 and "no sdflow workflow" in not_sdflow.json()["error"]
    assert job["state"] == "finished" and job["inputs"]["seed"] == 11 and job["inputs"]["steps"] == 3


def test_an_api_job_reads_no_file_outside_the_input_and_model_folders(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(PICTURE.read_bytes())
    with client(tmp_path / "data") as http:
        for path in (str(secret), "../../secret.png", "/etc/passwd", "../queue.sqlite"):
            reply = http.post("/api/jobs", json={"workflow": IMG2IMG, "inputs": {"image": path}})
            assert reply.status_code == 422, path
            [error] = reply.json()["errors"]
            assert error["node"] == "picture" and error["field"] == "path"
            assert "outside the folders" in error["message"]
        refused = http.post(
            "/api/jobs",
            json={
                "workflow": TXT2IMG.replace(
                    "type: LoadCheckpoint", "type: LoadCheckpoint\n    allow_pickle: true"
                )
            },
        )
        assert refused.status_code == 422 and "allow_pickle" in refused.json()["errors"][0]["message"]
        outside = (({"prompt": "embedding:/etc/passwd"}, "positive"), ({"checkpoint": "/etc"}, "ckpt"))
        for inputs, node in outside:
            reply = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": inputs})
            assert reply.status_code == 422 and reply.json()["errors"][0]["node"] == node
            assert "outside the folders" in reply.json()["errors"][0]["message"]
        assert http.get("/api/queue").json()["jobs"]["queued"] == 0


def test_an_uploaded_picture_is_an_input_of_later_jobs(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        reply = http.post("/api/uploads", files={"file": ("../../red circle.png", PICTURE.read_bytes())})
        assert reply.status_code == 201
        name = reply.json()["name"]
        assert name == "red circle.png" and (tmp_path / "inputs" / name).read_bytes() == PICTURE.read_bytes()
        raw = http.post("/api/uploads", params={"filename": "red circle.png"}, content=PICTURE.read_bytes())
        assert raw.status_code == 201 and raw.json()["name"] == "red circle-1.png"  # never over the first
        assert http.post("/api/uploads", content=b"x").status_code == 422  # no name
        job_id = http.post(
            "/api/jobs", json={"workflow": IMG2IMG, "inputs": {"image": name, "steps": 2}}
        ).json()["id"]
        assert wait(http, job_id)["state"] == "finished"
        missing = http.post("/api/jobs", json={"workflow": IMG2IMG, "inputs": {"image": "nothere.png"}})
        assert missing.status_code == 422 and "not found" in missing.json()["errors"][0]["message"]


def test_outputs_are_served_only_from_the_output_folder(tmp_path: Path) -> None:
    (tmp_path / "data" / "outputs" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "outputs" / "sub" / "a.png").write_bytes(b"png!")
    (tmp_path / "data" / "outputs" / "link").symlink_to(tmp_path)
    (tmp_path / "outside.txt").write_text("secret")
    with client(tmp_path / "data") as http:
        assert http.get("/api/outputs/sub/a.png").content == b"png!"
        for path in (
            "../queue.sqlite",
            "..%2fqueue.sqlite",
            "%2e%2e/queue.sqlite",
            "sub/../../queue.sqlite",
            "link/outside.txt",
            "/etc/passwd",
            "%2fetc%2fpasswd",
            "sub",
            "nothing.png",
            "a%00.png",
        ):
            reply = http.get("/api/outputs/" + path)
            assert reply.status_code in (400, 404), path
            assert "error" in reply.json() and b"secret" not in reply.content


def test_get_job_shows_per_node_progress_and_output_urls(tmp_path: Path) -> None:
    with client(tmp_path, worker=True) as http:
        job = wait(http, _submit(http)["id"])
        [file] = job["files"]
        assert http.get(file["url"]).content == Path(file["path"]).read_bytes()
    assert job["nodes"]["denoised"]["state"] == "ran" and job["nodes"]["save"]["seconds"] >= 0
    assert set(job["nodes"]) >= {"ckpt", "positive", "decoded"}


def test_models_lists_what_sdflow_models_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    (root / "models" / "loras").mkdir(parents=True)
    (root / "models" / "loras" / "style.safetensors").write_bytes(b"")
    monkeypatch.setenv("SDFLOW_MODELS", str(root))
    with client(tmp_path / "data") as http:
        models = http.get("/api/models").json()
    assert models["roots"] == [str(root)]
    assert [m["name"] for m in models["kinds"]["loras"]["models"]] == ["style.safetensors"]


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.got.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_is_posted_on_finish_and_a_dead_one_only_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/done"
    try:
        with client(tmp_path, worker=True) as api:
            job_id = _submit(api, webhook=url)["id"]
            dead = _submit(api, webhook="http://127.0.0.1:9/nobody")["id"]
            wait(api, job_id), wait(api, dead)
            api.app.state.worker.webhooks.join(15)
            assert (
                api.post("/api/jobs", json={"workflow": TXT2IMG, "webhook": "file:///etc"}).status_code == 422
            )
            assert wait(api, _submit(api)["id"])["state"] == "finished"  # the worker goes on
    finally:
        server.shutdown()
    [call] = _Receiver.got
    assert call["event"] == "job.finished" and call["job"]["id"] == job_id and call["job"]["outputs"]
    assert any("webhook" in r.message and dead in r.message for r in caplog.records)


def test_cancelled_and_paused_state_survive_in_the_database(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path)
    job_id, _ = queue.submit(TXT2IMG, FAST)
    queue.pause()
    assert queue.claim() is None
    queue.pause(False)
    assert queue.claim().id == job_id
    queue.cancelled(job_id)
    queue.close()
    again = JobQueue(tmp_path)
    assert again.get(job_id).state == "cancelled" and again.get(job_id).attempts == 1


def test_a_kept_parse_gives_each_job_its_own_workflow(tmp_path: Path) -> None:
    from sdflow.serve.validation import load_job

    first, second = load_job(TXT2IMG, tmp_path), load_job(TXT2IMG, tmp_path / "other")
    assert first is not second and first.nodes.keys() == second.nodes.keys()
    first.nodes.pop("save")
    assert "save" in load_job(TXT2IMG).nodes and second.base_dir == str(tmp_path / "other")
    assert first.nodes["denoised"].location("cfg").line == second.nodes["denoised"].location("cfg").line
