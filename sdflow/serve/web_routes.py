"""The web page at ``/``: plain HTML, CSS and JavaScript shipped in ``serve/static`` (no build step),
and the two routes it needs besides the JSON API: ``POST /api/web/inspect`` (a workflow's text, its
inputs for the form and its graph, from YAML text or an sdflow PNG) and ``GET /api/jobs/{id}/graph.svg``
(the graph of a submitted job, drawn by sdflow.draw)."""

from __future__ import annotations

import base64
import binascii
import io
import json
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from sdflow.draw.layout import drawing
from sdflow.draw.svg import to_svg
from sdflow.errors import UserError
from sdflow.graphs.model import Workflow
from sdflow.graphs.picture import INPUTS_KEY, WORKFLOW_KEY
from sdflow.graphs.yaml_io import loads
from sdflow.serve.bodies import ApiError, json_body
from sdflow.serve.validation import WORKFLOW_FILE, error_record

STATIC = Path(__file__).resolve().parent / "static"


def _picture_workflow(data: bytes) -> tuple[str, dict[str, Any]]:
    """The workflow text and the run's inputs an sdflow PNG carries."""
    from sdflow.formats.png import text_chunks

    chunks = text_chunks(io.BytesIO(data))  # type: ignore[arg-type]
    if WORKFLOW_KEY not in chunks:
        raise ApiError(422, "this picture holds no sdflow workflow (only pictures sdflow saved do)")
    try:
        values = json.loads(chunks.get(INPUTS_KEY, "{}"))
    except json.JSONDecodeError:
        values = {}
    return chunks[WORKFLOW_KEY], values if isinstance(values, dict) else {}


def _form(workflow: Workflow, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The workflow's inputs as the page's form shows them: name, type, value, description."""
    return [
        {
            "name": name,
            "type": spec.type,
            "value": values.get(name, spec.default),
            "required": spec.required and name not in values,
            "description": spec.description,
        }
        for name, spec in workflow.inputs.items()
    ]


def inspect(text: str | None, png: str | None) -> dict[str, Any]:
    """{workflow, inputs, svg} of YAML ``text`` or a base64 sdflow ``png``; 422 when it does not load."""
    values: dict[str, Any] = {}
    if png is not None:
        try:
            text, values = _picture_workflow(base64.b64decode(png, validate=True))
        except (binascii.Error, ValueError):
            raise ApiError(422, "'png' must be the picture's bytes in base64") from None
        except UserError as exc:
            raise ApiError(422, exc.message) from None
    assert text is not None
    try:
        workflow = loads(text, file=WORKFLOW_FILE)
    except UserError as exc:
        errors = [error_record(e) for e in getattr(exc, "errors", [exc])]
        raise ApiError(422, "the workflow does not load", errors=errors) from None
    return {"workflow": text, "inputs": _form(workflow, values), "svg": to_svg(drawing(workflow))}


async def post_inspect(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not (
        isinstance(body.get("workflow"), str) or isinstance(body.get("png"), str)
    ):
        raise ApiError(422, "body must be {workflow: YAML text} or {png: base64 of an sdflow PNG}")
    text = body.get("workflow") if isinstance(body.get("workflow"), str) else None
    png = body.get("png") if text is None else None
    return JSONResponse(await run_in_threadpool(inspect, text, png))


def job_svg(workflow_text: str) -> str:
    """The SVG of a job's workflow (nodes titled "id: type", for the page to mark them)."""
    return to_svg(drawing(loads(workflow_text, file=WORKFLOW_FILE)))


async def get_graph(request: Request) -> Response:
    job = await run_in_threadpool(request.app.state.queue.get, request.path_params["id"])
    if job is None:
        raise ApiError(404, f"no job '{request.path_params['id']}'")
    try:
        svg = await run_in_threadpool(job_svg, job.workflow)
    except UserError as exc:
        raise ApiError(422, exc.message) from None
    return Response(svg, media_type="image/svg+xml")


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    """The page and its routes (the page last: it is mounted at "/")."""
    return [
        Route("/api/web/inspect", post_inspect, methods=["POST"]),
        Route("/api/jobs/{id}/graph.svg", get_graph, methods=["GET"]),
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
