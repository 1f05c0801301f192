"""Fuzzed requests to `sdflow serve`: bad JSON, wrong types, huge bodies, traversal in outputs and in
workflow file fields, bad tokens. Each gets a 4xx JSON answer and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EXAMPLES
from tests.serve_helpers import TXT2IMG, client

IMG2IMG = (EXAMPLES / "img2img.yaml").read_text()
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
job_fields = st.fixed_dictionaries(
    {},
    optional={
        "workflow": json_values | st.just(TXT2IMG) | st.just("version: 2\nnodes: 5\n"),
        "inputs": json_values
        | st.dictionaries(st.sampled_from(["seed", "steps", "cfg", "nope"]), json_values),
        "sweep": json_values,
        "priority": json_values,
        "webhook": json_values,
        "extra": json_values,
    },
)


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    (data.parent / "secret.txt").write_text("top secret")
    with client(data, token=TOKEN, max_body=64 * 1024) as test_client:
        test_client.headers.update(AUTH)
        # the first validation imports the node library and models' code: once, here
        assert (
            test_client.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {"steps": -1}}).status_code
            == 422
        )
        yield test_client


def _refused(reply: Any, *statuses: int) -> None:
    assert 400 <= reply.status_code < 500 and (not statuses or reply.status_code in statuses), reply.text
    assert "error" in reply.json() and "Traceback" not in reply.text and b"top secret" not in reply.content


def _still_serving(http: Any) -> None:
    assert http.get("/api/queue").status_code == 200


@FUZZ
@given(body=st.binary(max_size=300))
def test_random_bytes_as_a_job_are_400_or_422(http: Any, body: bytes) -> None:
    reply = http.post("/api/jobs", content=body, headers={"Content-Type": "application/json"})
    _refused(reply, 400, 422)
    _still_serving(http)


@FUZZ
@given(body=json_values | job_fields)
def test_json_of_the_wrong_shape_is_4xx(http: Any, body: Any) -> None:
    if isinstance(body, dict) and body.get("workflow") == TXT2IMG and set(body) <= {"workflow", "priority"}:
        body["inputs"] = {"steps": -1}  # would be a valid job: keep it invalid
    reply = http.post("/api/jobs", content=json.dumps(body), headers={"Content-Type": "application/json"})
    _refused(reply)
    _still_serving(http)


@FUZZ
@given(path=st.text(max_size=40) | st.sampled_from(["../secret.txt", "../../secret.txt", "/etc/passwd"]))
def test_file_fields_name_nothing_outside_the_servers_folders(http: Any, path: str) -> None:
    reply = http.post("/api/jobs", json={"workflow": IMG2IMG, "inputs": {"image": path, "steps": 1}})
    _refused(reply, 422)
    _still_serving(http)


traversals = st.lists(
    st.sampled_from(
        ["..", "%2e%2e", "%2E%2E%2F", "..%2f", "%2f", "/", "etc", "passwd", "secret.txt", "%00", "\\", "~"]
    ),
    max_size=6,
).map("/".join)


@FUZZ
@given(path=traversals | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30))
def test_outputs_refuse_everything_outside_the_output_folder(http: Any, path: str) -> None:
    reply = http.get("/api/outputs/" + path)
    assert b"top secret" not in reply.content
    if reply.request.url.path.startswith("/api/outputs/"):  # the client may resolve '..' itself
        _refused(reply, 400, 404)
    _still_serving(http)


@FUZZ
@given(token=st.text(alphabet=st.characters(codec="ascii", min_codepoint=32, max_codepoint=126), max_size=30))
def test_a_wrong_token_is_401_on_every_route(http: Any, token: str) -> None:
    if token in (TOKEN, f"Bearer {TOKEN}"):
        return
    for method, route in (
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", "/api/models"),
        ("GET", "/api/outputs/x.png"),
        ("POST", "/api/uploads"),
        ("POST", "/api/queue/pause"),
        ("DELETE", "/api/jobs/x"),
        ("GET", "/api/nowhere"),
    ):
        reply = http.request(method, route, headers={"Authorization": token})
        _refused(reply, 401)
        reply = http.request(method, route, params={"token": token}, headers={"Authorization": ""})
        _refused(reply, 401)
    _still_serving(http)


def test_huge_bodies_are_413_declared_or_chunked_on_every_route(http: Any) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 4096

    for route in ("/api/jobs", "/api/uploads?filename=a.png", "/api/jobs/x"):
        _refused(http.post(route, content=b"x" * (65 * 1024)), 413, 405)
        _refused(http.post(route, content=chunks()), 413, 405)
    big = {"file": ("big.png", b"x" * (70 * 1024))}
    _refused(http.post("/api/uploads", files=big), 413)
    _refused(http.post("/api/jobs", files={"workflow": ("w.yaml", b"x" * (70 * 1024))}), 413)
    _refused(http.patch("/api/jobs/x", content=b"x" * (65 * 1024)), 413)
    _still_serving(http)
    assert list(Path(http.app.state.settings.inputs).iterdir()) == []


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from(["workflow", "inputs", "sweep", "priority", "bad"]),
        st.binary(max_size=60),
        max_size=4,
    )
)
def test_malformed_multipart_jobs_are_4xx(http: Any, fields: dict[str, bytes]) -> None:
    files = {name: (name, value) for name, value in fields.items()}
    reply = (
        http.post("/api/jobs", files=files)
        if files
        else http.post(
            "/api/jobs", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
    )
    _refused(reply)
    _still_serving(http)


def test_no_cors_headers_unless_asked(tmp_path: Path) -> None:
    origin = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    with client(tmp_path / "a") as plain:
        assert "access-control-allow-origin" not in plain.get("/api/jobs", headers=origin).headers
        assert plain.options("/api/jobs", headers=origin).status_code == 405
    with client(tmp_path / "b", cors=["http://app.example"]) as allowed:
        good = allowed.options("/api/jobs", headers={**origin, "Origin": "http://app.example"})
        assert good.headers["access-control-allow-origin"] == "http://app.example"
        assert "access-control-allow-origin" not in allowed.get("/api/jobs", headers=origin).headers
