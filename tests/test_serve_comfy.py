"""The ComfyUI-compatible routes of `sdflow serve`: /prompt, /queue, /history, /view, /object_info."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from starlette.testclient import TestClient

from sdflow.formats.comfy_json import parse
from sdflow.graphs.yaml_io import dumps, loads
from sdflow.interop.comfy import convert
from sdflow.serve.app import create_app
from tests.workflows import SHAPES_COMFY, comfy_api


def cpu_runner(output_dir: str) -> Any:
    from sdflow.runner import Runner

    return Runner(device="cpu", dtype="fp32", output_dir=output_dir)


def client(data: Path, worker: bool = False) -> TestClient:
    return TestClient(create_app(data, make_runner=cpu_runner, worker=worker), raise_server_exceptions=False)


def wait_for_history(http: TestClient, prompt_id: str, seconds: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        history = http.get(f"/history/{prompt_id}").json()
        if prompt_id in history:
            return history[prompt_id]
        time.sleep(0.2)
    raise AssertionError(f"prompt {prompt_id} did not finish in {seconds}s")


def direct_png(prompt: dict[str, Any], output_dir: Path, data: Path) -> bytes:
    """What an in-process sdflow run of the imported prompt writes: the YAML the server queues, its
    relative paths resolving in the server's input folder as the server's jobs do."""
    from sdflow.errors import Location

    workflow = loads(dumps(convert(parse(prompt, Location("<prompt>")), "<prompt>").workflow))
    workflow.base_dir = str((data / "inputs").resolve())
    [path] = cpu_runner(str(output_dir)).run(workflow).report.files
    return Path(path).read_bytes()


def test_a_prompt_is_queued_and_listed_as_comfyui_lists_it(tmp_path: Path) -> None:
    prompt = comfy_api(SHAPES_COMFY)
    with client(tmp_path) as http:
        reply = http.post("/prompt", json={"prompt": prompt, "client_id": "abc"})
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["node_errors"] == {} and answer["number"] == 1
        second = http.post("/prompt", json={"prompt": prompt}).json()
        assert second["number"] == 2
        queue = http.get("/queue").json()
        assert queue["queue_running"] == []
        number, prompt_id, queued_prompt, extra, outputs = queue["queue_pending"][0]
        assert (number, prompt_id, queued_prompt) == (1, answer["prompt_id"], prompt)
        assert extra == {"client_id": "abc"} and outputs == ["9"]
        assert [item[1] for item in queue["queue_pending"]] == [answer["prompt_id"], second["prompt_id"]]
        job = http.get(f"/api/jobs/{answer['prompt_id']}").json()
        assert job["state"] == "queued"
        assert http.get("/history").json() == {}


def test_a_prompt_runs_and_history_points_view_at_the_picture_of_the_saveimage_node(tmp_path: Path) -> None:
    prompt = comfy_api(SHAPES_COMFY)
    with client(tmp_path / "data", worker=True) as http:
        prompt_id = http.post("/prompt", json={"prompt": prompt, "client_id": "c"}).json()["prompt_id"]
        item = wait_for_history(http, prompt_id)
        assert item["status"]["status_str"] == "success" and item["status"]["completed"]
        [picture] = item["outputs"]["9"]["images"]
        assert picture["type"] == "output" and picture["subfolder"] == ""
        assert picture["filename"].startswith("ComfyUI") and picture["filename"].endswith(".png")
        served = http.get("/view", params=picture)
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        assert prompt_id in http.get("/history").json()
        assert http.get("/history", params={"max_items": "0"}).json() == {}
    assert served.content == direct_png(prompt, tmp_path / "direct", tmp_path / "data")


def test_importer_refusals_are_node_errors_under_the_comfyui_node_id(tmp_path: Path) -> None:
    prompt = comfy_api({"3": {"sampler_name": "dpmpp_2s_ancestral"}})
    prompt["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    with client(tmp_path) as http:
        reply = http.post("/prompt", json={"prompt": prompt})
        assert reply.status_code == 400
        body = reply.json()
        assert body["error"]["type"] == "prompt_outputs_failed_validation"
        assert set(body["error"]) == {"type", "message", "details", "extra_info"}
        assert set(body["node_errors"]) == {"3", "20"}
        sampler = body["node_errors"]["3"]
        assert sampler["class_type"] == "KSampler"
        assert "dpmpp_2s_ancestral" in sampler["errors"][0]["message"]
        assert body["node_errors"]["20"]["class_type"] == "FancyUpscaler"
        assert http.get("/queue").json()["queue_pending"] == []


def test_validation_errors_are_node_errors_of_the_node_they_came_from(tmp_path: Path) -> None:
    prompt = comfy_api({**SHAPES_COMFY, "5": {"width": 63, "height": 64}})
    with client(tmp_path) as http:
        reply = http.post("/prompt", json={"prompt": prompt})
        assert reply.status_code == 400, reply.text
        errors = reply.json()["node_errors"]
        assert list(errors) == ["5"] and errors["5"]["class_type"] == "EmptyLatentImage"
        assert "width" in errors["5"]["errors"][0]["message"]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({}, "no_prompt"),
        ({"prompt": {}}, "no_prompt"),
        ({"prompt": "text"}, "no_prompt"),
        ({"prompt": {"1": {"inputs": {}}}}, "invalid_prompt"),
        ({"prompt": {"1": {"class_type": "KSampler", "inputs": {}}}}, "prompt_outputs_failed_validation"),
    ],
)
def test_a_missing_or_malformed_prompt_is_400_in_comfyuis_shape(
    tmp_path: Path, body: dict, kind: str
) -> None:
    with client(tmp_path) as http:
        reply = http.post("/prompt", json=body)
        assert reply.status_code == 400
        assert reply.json()["error"]["type"] == kind
        assert bool(reply.json()["node_errors"]) == (kind == "prompt_outputs_failed_validation")


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "../queue.sqlite"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "queue.sqlite", "subfolder": ".."}, 403),
        ({"filename": "passwd", "subfolder": "/etc"}, 403),
        ({"filename": "x.png", "type": "temp"}, 400),
        ({"filename": "nothing.png"}, 404),
        ({}, 400),
    ],
)
def test_view_serves_only_the_output_and_input_folders(tmp_path: Path, params: dict, status: int) -> None:
    (tmp_path / "outputs" / "sub").mkdir(parents=True)
    (tmp_path / "outputs" / "sub" / "a.png").write_bytes(b"picture")
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "b.png").write_bytes(b"input")
    with client(tmp_path) as http:
        assert http.get("/view", params={"filename": "a.png", "subfolder": "sub"}).content == b"picture"
        assert http.get("/view", params={"filename": "b.png", "type": "input"}).content == b"input"
        reply = http.get("/view", params=params)
        assert reply.status_code == status and "error" in reply.json()


def test_object_info_describes_the_node_types_the_importer_maps(tmp_path: Path) -> None:
    from sdflow.interop.comfy import HANDLERS

    with client(tmp_path) as http:
        info = http.get("/object_info").json()
        one = http.get("/object_info/KSampler").json()
        assert http.get("/object_info/NoSuchNode").json() == {}
    assert set(info) == set(HANDLERS)
    sampler = info["KSampler"]
    assert one == {"KSampler": sampler}
    assert sampler["input"]["required"]["model"] == ["MODEL"]
    assert sampler["input"]["required"]["positive"] == ["CONDITIONING"]
    assert sampler["input"]["optional"]["steps"] == ["INT", {"default": 20}]
    assert sampler["output"] == ["LATENT"] and not sampler["output_node"]
    assert info["CheckpointLoaderSimple"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert info["SaveImage"]["output_node"] and info["SaveImage"]["output"] == []
    assert info["CLIPSetLastLayer"]["output"] == ["CLIP"]  # passed on: typed like other "clip" inputs
    assert info["ControlNetLoader"]["output"] == ["CONTROL_NET"]
    assert not any("*" in str(entry["input"]) + str(entry["output"]) for entry in info.values())
