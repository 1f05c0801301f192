"""Fuzzed requests to the ComfyUI routes: API-format prompts with inputs of every JSON shape, bodies
of every shape, /view parameters with traversal. Each gets ComfyUI's answer or a 4xx JSON one,
never a 500, and nothing outside the server's folders is served."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve_helpers import client
from tests.workflows import SHAPES_COMFY, comfy_api

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
BASE = comfy_api(SHAPES_COMFY)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
node_ids = st.sampled_from(sorted(BASE))
input_names = st.sampled_from(sorted({name for node in BASE.values() for name in node["inputs"]} | {"x"}))


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    data = tmp_path_factory.mktemp("comfy-fuzz") / "data"
    (data.parent / "secret.txt").write_text("top secret")
    with client(data, max_body=64 * 1024) as test_client:
        assert test_client.post("/prompt", json={"prompt": BASE}).status_code == 200  # imports, once
        yield test_client


@FUZZ
@given(changes=st.lists(st.tuples(node_ids, input_names, json_values), max_size=4))
def test_prompts_with_any_input_values_get_an_answer_not_a_500(http: Any, changes: list) -> None:
    prompt = comfy_api(SHAPES_COMFY)
    for node, name, value in changes:
        prompt[node]["inputs"][name] = value
    reply = http.post("/prompt", json={"prompt": prompt, "client_id": "fuzz"})
    assert reply.status_code in (200, 400), reply.text
    body = reply.json()
    if reply.status_code == 200:
        assert body["node_errors"] == {} and isinstance(body["number"], int)
    else:
        assert set(body["error"]) == {"type", "message", "details", "extra_info"}
        assert set(body["node_errors"]) <= set(prompt)


@FUZZ
@given(body=json_values | st.fixed_dictionaries({"prompt": json_values}, optional={"client_id": json_values}))
def test_bodies_of_any_shape_get_a_4xx_json_answer(http: Any, body: Any) -> None:
    for path in ("/prompt", "/queue", "/interrupt"):
        reply = http.post(path, json=body)
        assert reply.status_code < 500, (path, reply.text)
        if reply.status_code >= 400:
            assert reply.json()


@FUZZ
@given(
    filename=st.text(max_size=20) | st.sampled_from(["../secret.txt", "..", "secret.txt", "/etc/passwd"]),
    subfolder=st.text(max_size=12) | st.sampled_from(["..", "../..", "/", "/etc", "a/../.."]),
    kind=st.sampled_from(["output", "input", "temp", ""]),
)
def test_view_never_serves_outside_the_folders(http: Any, filename: str, subfolder: str, kind: str) -> None:
    reply = http.get("/view", params={"filename": filename, "subfolder": subfolder, "type": kind})
    assert reply.status_code in (400, 403, 404), reply.text
    assert b"top secret" not in reply.content


def test_the_server_still_serves_after_the_fuzzing(http: Any) -> None:
    assert http.get("/queue").status_code == 200
    assert http.post("/prompt", json={"prompt": BASE}).status_code == 200
