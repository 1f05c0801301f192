"""What POST /api/jobs carries, read and type-checked: a JSON body, or a multipart form whose
``workflow`` part is YAML text or a PNG that sdflow wrote."""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from sdflow.errors import WorkflowError
from sdflow.serve.bodies import ApiError, parse_json, priority_of, read_body
from sdflow.serve.webhooks import webhook_problem

FIELDS = ("workflow", "inputs", "sweep", "priority", "webhook")
MAX_SWEEP = 1000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class Submission:
    """A job request: the workflow's YAML text, one input dict per job (a sweep gives several)."""

    workflow: str
    items: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    priority: int = 0
    webhook: str | None = None
    rerun_of: str | None = None  # the job this one runs again (POST /api/jobs/{id}/rerun)


async def read_submission(request: Request) -> Submission:
    """The submission in a JSON or multipart/form-data body (4xx ApiError for anything malformed)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        return await _from_form(request)
    body = parse_json(await read_body(request))
    if not isinstance(body, dict):
        raise ApiError(422, "body must be a JSON object {workflow, inputs, sweep, priority, webhook}")
    return submission(body)


def submission(body: dict[str, Any], picture_inputs: dict[str, Any] | None = None) -> Submission:
    """Check a submission's fields; ``workflow`` is YAML text or a graph as a JSON object."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}")
    workflow = body.get("workflow")
    if isinstance(workflow, dict):  # graph JSON: YAML reads JSON, so lines in messages still point
        workflow = json.dumps(workflow, indent=1)
    if not isinstance(workflow, str):
        raise ApiError(422, "'workflow' must be the workflow's YAML text or its graph as a JSON object")
    inputs = body.get("inputs", {})
    if not isinstance(inputs, dict):
        raise ApiError(422, "'inputs' must be an object {name: value}")
    inputs = {**(picture_inputs or {}), **inputs}
    webhook = body.get("webhook")
    if webhook is not None and (problem := webhook_problem(webhook)):
        raise ApiError(422, problem)
    items = [{**inputs, **varied} for varied in _sweep(body.get("sweep", {}))]
    return Submission(workflow, items, priority_of(body.get("priority", 0)), webhook)


def _sweep(sweep: Any) -> list[dict[str, Any]]:
    """{name: [values...]} -> every combination (one empty one when nothing is swept)."""
    if not isinstance(sweep, dict) or not all(isinstance(v, list) and v for v in sweep.values()):
        raise ApiError(422, "'sweep' must be an object {name: [value, ...]} with non-empty lists")
    count = 1
    for values in sweep.values():
        count *= len(values)
    if count > MAX_SWEEP:
        raise ApiError(422, f"'sweep' makes {count} jobs; at most {MAX_SWEEP} at once")
    names = list(sweep)
    return [dict(zip(names, choice, strict=True)) for choice in itertools.product(*sweep.values())]


async def _from_form(request: Request) -> Submission:
    """A multipart form: ``workflow`` a file (YAML or sdflow PNG) or text; the other fields JSON text."""
    try:
        form = await request.form(max_files=2, max_fields=len(FIELDS) + 2)
    except ApiError:
        raise
    except Exception as exc:  # the multipart parser's own errors: a malformed form
        raise ApiError(400, f"malformed multipart form: {exc}") from None
    body: dict[str, Any] = {}
    picture_inputs: dict[str, Any] | None = None
    for name, value in form.multi_items():
        if name not in FIELDS:
            raise ApiError(422, f"unknown field(s): {name}")
        data = await value.read() if isinstance(value, UploadFile) else value.encode()
        if name == "workflow":
            body["workflow"], picture_inputs = _workflow_part(data)
        elif name == "priority":
            body[name] = parse_json(data)
        elif name == "webhook":
            body[name] = data.decode("utf-8", "replace")
        else:
            body[name] = parse_json(data)
    await form.close()
    return submission(body, picture_inputs)


def _workflow_part(data: bytes) -> tuple[str, dict[str, Any] | None]:
    """A workflow file's bytes: YAML text, or a PNG sdflow wrote (its workflow and its run's inputs)."""
    if not data.startswith(PNG_SIGNATURE):
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            raise ApiError(422, "'workflow' is neither UTF-8 YAML text nor a PNG that sdflow saved") from None
    from sdflow.formats.png import text_chunks
    from sdflow.graphs.picture import INPUTS_KEY, WORKFLOW_KEY

    try:
        chunks = text_chunks(io.BytesIO(data))  # type: ignore[arg-type]
    except WorkflowError as exc:
        raise ApiError(422, f"'workflow': {exc.message}") from None
    if WORKFLOW_KEY not in chunks:
        raise ApiError(422, "'workflow': this PNG holds no sdflow workflow (pictures sdflow saved do)")
    try:
        inputs = json.loads(chunks.get(INPUTS_KEY, "{}"))
    except json.JSONDecodeError:
        inputs = None
    if not isinstance(inputs, dict):
        raise ApiError(422, f"'workflow': the picture's '{INPUTS_KEY}' text is not a JSON object")
    return chunks[WORKFLOW_KEY], inputs
