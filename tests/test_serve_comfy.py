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
from tests.serve_helpers import client, cpu_runner, free_port, start_server
from tests.workflows import SHAPES_COMFY, comfy_api


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


def test_interrupt_stops_the_running_prompt_at_a_step(tmp_path: Path) -> None:
    prompt = comfy_api({**SHAPES_COMFY, "3": {**SHAPES_COMFY["3"], "steps": 400}})
    with client(tmp_path, worker=True) as http:
        prompt_id = http.post("/prompt", json={"prompt": prompt}).json()["prompt_id"]
        deadline = time.monotonic() + 120
        while not any(
            node.get("step") for node in http.get(f"/api/jobs/{prompt_id}").json()["nodes"].values()
        ):
            assert time.monotonic() < deadline, "the prompt never reached a step"
            time.sleep(0.05)
        assert http.post("/interrupt").status_code == 200
        item = wait_for_history(http, prompt_id, 120)
    assert item["status"]["status_str"] == "error" and not item["status"]["completed"]
    assert [kind for kind, _ in item["status"]["messages"]][-1] == "execution_interrupted"
    assert item["outputs"] == {}


def comfyui_script(server_address: str, prompt: dict[str, Any]) -> tuple[list[dict], dict[str, list[bytes]]]:
    """What ComfyUI's script_examples/websockets_api_example.py does (urllib and a WebSocket client):
    queue the prompt, read /ws until `executing` says node None for it, then fetch its pictures
    through /history and /view. Returns the JSON messages read, and the pictures by node id."""
    import json
    import urllib.parse
    import urllib.request
    import uuid

    from websockets.sync.client import connect

    client_id = str(uuid.uuid4())

    def queue_prompt(prompt: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps({"prompt": prompt, "client_id": client_id}).encode("utf-8")
        request = urllib.request.Request(f"http://{server_address}/prompt", data=data)
        return json.loads(urllib.request.urlopen(request).read())

    def get_image(filename: str, subfolder: str, folder_type: str) -> bytes:
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        with urllib.request.urlopen(f"http://{server_address}/view?{query}") as response:
            return response.read()

    def get_history(prompt_id: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{server_address}/history/{prompt_id}") as response:
            return json.loads(response.read())

    messages = []
    with connect(f"ws://{server_address}/ws?clientId={client_id}", open_timeout=30) as ws:
        prompt_id = queue_prompt(prompt)["prompt_id"]
        while True:
            out = ws.recv(timeout=300)
            if isinstance(out, str):
                message = json.loads(out)
                messages.append(message)
                if message["type"] == "executing":
                    data = message["data"]
                    if data["node"] is None and data["prompt_id"] == prompt_id:
                        break  # execution is done
    history = get_history(prompt_id)[prompt_id]
    output_images = {}
    for node_id, node_output in history["outputs"].items():
        if "images" in node_output:
            output_images[node_id] = [
                get_image(i["filename"], i["subfolder"], i["type"]) for i in node_output["images"]
            ]
    return messages, output_images


@pytest.mark.slow
def test_a_comfyui_websocket_script_runs_a_prompt_on_a_real_server(tmp_path: Path) -> None:
    pytest.importorskip("websockets")
    prompt = comfy_api(SHAPES_COMFY)
    data, port = tmp_path / "data", free_port()
    server = start_server(data, port)
    try:
        messages, images = comfyui_script(f"127.0.0.1:{port}", prompt)
        again, _ = comfyui_script(f"127.0.0.1:{port}", prompt)  # the same prompt: cached nodes
    finally:
        server.terminate()
        server.wait(60)
    assert list(images) == ["9"] and len(images["9"]) == 1
    assert images["9"][0] == direct_png(prompt, tmp_path / "direct", data)
    kinds = [message["type"] for message in messages]
    assert kinds[0] == "status" and "queue_remaining" in messages[0]["data"]["status"]["exec_info"]
    assert kinds.index("execution_start") < kinds.index("progress") < kinds.index("executed")
    assert kinds[-3:] == ["executed", "execution_success", "executing"]
    executing = [m["data"]["node"] for m in messages if m["type"] == "executing"]
    assert {"4", "3", "8", "9"} <= set(executing[:-1]) and executing[-1] is None
    assert executing.index("4") < executing.index("3") < executing.index("8")  # ComfyUI node ids, in order
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 2, "3"), (2, 2, "3")]
    [executed] = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed["node"] == "9" and executed["output"]["images"][0]["type"] == "output"
    cached = {node for m in again if m["type"] == "execution_cached" for node in m["data"]["nodes"]}
    assert {"4", "6", "7"} <= cached
    assert "4" not in [m["data"]["node"] for m in again if m["type"] == "executing"]


def test_post_queue_deletes_or_clears_pending_prompts_and_get_prompt_counts_them(tmp_path: Path) -> None:
    prompt = comfy_api(SHAPES_COMFY)
    with client(tmp_path) as http:
        first, second, third = (
            http.post("/prompt", json={"prompt": prompt}).json()["prompt_id"] for _ in "abc"
        )
        assert http.get("/prompt").json() == {"exec_info": {"queue_remaining": 3}}
        assert http.post("/queue", json={"delete": [second, "nope"]}).status_code == 200
        assert [item[1] for item in http.get("/queue").json()["queue_pending"]] == [first, third]
        assert http.get(f"/api/jobs/{second}").json()["state"] == "cancelled"
        assert http.post("/queue", json={"clear": True}).status_code == 200
        assert http.get("/queue").json()["queue_pending"] == []
        assert http.get("/prompt").json()["exec_info"]["queue_remaining"] == 0
        assert http.post("/queue", json=[1]).status_code == 400


def test_with_a_token_the_comfyui_routes_and_ws_need_it(tmp_path: Path) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client(tmp_path, token="s3cret") as http:
        assert http.get("/queue").status_code == 401
        assert http.get("/queue", params={"token": "s3cret"}).status_code == 200
        with pytest.raises(WebSocketDisconnect), http.websocket_connect("/ws?clientId=a") as ws:
            ws.receive_json()
        with http.websocket_connect("/ws?clientId=a&token=s3cret") as ws:
            first = ws.receive_json()
    assert first == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "a"}}
