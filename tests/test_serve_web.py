"""The web page's routes: the page and its files, reading a workflow (YAML or an sdflow PNG) for the
inputs form, and the SVG of a submitted job's graph. The page itself runs in test_serve_page.py."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.serve_helpers import TXT2IMG, client


def png(**texts: str) -> str:
    """A small PNG with these text chunks (as SaveImage writes "sdflow:workflow"...), in base64."""
    info = PngInfo()
    for key, text in texts.items():
        info.add_text(key.replace("_", ":"), text)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode()


def test_the_page_and_its_files_are_served(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        page = http.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for name in ("app.js", "style.css"):
            assert f"static/{name}" in page.text
            assert http.get(f"/static/{name}").status_code == 200
        assert http.get("/static/../app.py").status_code == 404


def test_a_yaml_workflow_gives_its_inputs_and_graph(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        found = http.post("/api/web/inspect", json={"workflow": TXT2IMG}).json()
    inputs = {item["name"]: item for item in found["inputs"]}
    assert list(inputs) == ["prompt", "negative", "seed", "steps", "cfg", "sampler", "checkpoint"]
    assert (inputs["steps"]["type"], inputs["steps"]["value"]) == ("int", 20)
    assert found["workflow"] == TXT2IMG
    assert found["svg"].startswith("<svg") and "<title>denoised: DenoiseLoop</title>" in found["svg"]


def test_an_sdflow_png_gives_its_workflow_with_the_runs_values(tmp_path: Path) -> None:
    picture = png(sdflow_workflow=TXT2IMG, sdflow_inputs='{"steps": 3, "seed": 9}')
    with client(tmp_path) as http:
        found = http.post("/api/web/inspect", json={"png": picture}).json()
    values = {item["name"]: item["value"] for item in found["inputs"]}
    assert found["workflow"] == TXT2IMG
    assert (values["steps"], values["seed"], values["cfg"]) == (3, 9, 4.0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"workflow": "nodes: ["}, "does not load"),
        ({"png": "not base64!"}, "base64"),
        ({"png": base64.b64encode(b"hello").decode()}, "cannot read the picture"),
        ({"png": png(parameters="a1111 text")}, "no sdflow workflow"),
        ({"workflow": 3}, "body must be"),
    ],
)
def test_what_does_not_load_is_422(tmp_path: Path, body: dict, message: str) -> None:
    with client(tmp_path) as http:
        reply = http.post("/api/web/inspect", json=body)
    assert reply.status_code == 422 and message in reply.json()["error"]


def test_a_jobs_graph_is_its_workflows_svg(tmp_path: Path) -> None:
    with client(tmp_path) as http:
        job = http.post("/api/jobs", json={"workflow": TXT2IMG, "inputs": {"steps": 2}}).json()["id"]
        svg = http.get(f"/api/jobs/{job}/graph.svg")
        missing = http.get("/api/jobs/nope/graph.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    titles = [line for line in svg.text.splitlines() if "<title>" in line]
    assert len(titles) == 9 and "<title>save: SaveImage</title>" in svg.text
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
