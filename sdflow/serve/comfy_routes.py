"""The ComfyUI-compatible routes, so that scripts written for ComfyUI's API drive sdflow unchanged:
``POST /prompt`` (the API-format graph, through sdflow's importer), ``GET /queue``, ``GET /history``,
``GET /view``, ``POST /interrupt`` and ``GET /object_info``. A prompt becomes an ordinary job of the
queue; what ComfyUI's answers need besides (the prompt, its client and node ids) is in ComfyStore."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sdflow.errors import Location, UserError
from sdflow.formats.comfy_json import parse
from sdflow.graphs.yaml_io import dumps
from sdflow.interop.comfy import ConversionError, convert
from sdflow.nodes import registry
from sdflow.serve import comfy_ws
from sdflow.serve.bodies import ApiError, json_body
from sdflow.serve.comfy_nodes import object_info
from sdflow.serve.comfy_store import ComfyPrompt, ComfyStore, store_of
from sdflow.serve.queue import Job, JobQueue
from sdflow.serve.routes_jobs import accepted_soon, publish_queue
from sdflow.serve.settings import Settings
from sdflow.serve.submission import Submission

SOURCE = "<prompt>"
FOLDERS = ("output", "input")  # /view's `type`s: DATA/outputs, DATA/inputs
_NODE_PROBLEM = re.compile(r"node (\S+) \(([^)]*)\): (.*)")
_UNSUPPORTED = re.compile(r"unsupported ComfyUI node (\S+) \(nodes? ([^)]*)\)")


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def _store(request: Request) -> ComfyStore:
    return store_of(request.app.state)


def data_folder(request: Request, kind: str) -> Path:
    """``DATA/outputs`` or ``DATA/inputs`` (resolved)."""
    settings: Settings = request.app.state.settings
    return (settings.outputs if kind == "output" else settings.inputs).resolve()


def _refusal(kind: str, message: str, details: str, node_errors: dict[str, Any] | None = None) -> Response:
    """ComfyUI's 400 answer: {error: {type, message, details, extra_info}, node_errors}."""
    error = {"type": kind, "message": message, "details": details, "extra_info": {}}
    return JSONResponse({"error": error, "node_errors": node_errors or {}}, status_code=400)


def _node_error(node_errors: dict[str, Any], node: str, class_type: str, message: str) -> None:
    entry = node_errors.setdefault(node, {"errors": [], "dependent_outputs": [], "class_type": class_type})
    entry["errors"].append(
        {"type": "value_not_supported", "message": message, "details": message, "extra_info": {}}
    )


def _conversion_refusal(prompt: dict[str, Any], error: UserError) -> Response:
    """The importer's refusals, each under the ComfyUI node it names."""
    node_errors: dict[str, Any] = {}
    lines = [e.message for e in getattr(error, "errors", [error])]
    for line in lines:
        if found := _UNSUPPORTED.fullmatch(line):
            for node in found.group(2).split(", "):
                _node_error(node_errors, node, found.group(1), line)
        elif (found := _NODE_PROBLEM.fullmatch(line)) and found.group(1) in prompt:
            _node_error(node_errors, found.group(1), found.group(2), found.group(3))
    kind = "prompt_outputs_failed_validation" if node_errors else "invalid_prompt"
    return _refusal(kind, "Prompt outputs failed validation", "\n".join(lines), node_errors)


def _validation_refusal(prompt: dict[str, Any], origins: dict[str, str], errors: list[dict]) -> Response:
    """`sdflow validate`'s located errors, each under the ComfyUI node its sdflow node came from."""
    node_errors: dict[str, Any] = {}
    for error in errors:
        node = origins.get(error["node"] or "")
        if node in prompt:
            field = f"{error['field']}: " if error["field"] else ""
            _node_error(node_errors, node, str(prompt[node].get("class_type")), field + error["message"])
    details = "\n".join(e["message"] for e in errors)
    return _refusal(
        "prompt_outputs_failed_validation", "Prompt outputs failed validation", details, node_errors
    )


def _imported(prompt: dict[str, Any]) -> tuple[str, dict[str, str], list[str]]:
    """The sdflow workflow of an API-format prompt as YAML text, the ComfyUI node of each sdflow node,
    and the ComfyUI ids of the output nodes; raises the importer's UserError."""
    conversion = convert(parse(prompt, Location(SOURCE)), SOURCE)
    outputs = [
        conversion.origins[node_id]
        for node_id, spec in conversion.workflow.nodes.items()
        if registry.get(spec.type).is_output and node_id in conversion.origins
    ]
    return dumps(conversion.workflow), conversion.origins, sorted(set(outputs))


async def post_prompt(request: Request) -> Response:
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), dict) or not body["prompt"]:
        return _refusal("no_prompt", "No prompt provided", "the body needs 'prompt': the API-format graph")
    prompt, client_id = body["prompt"], body.get("client_id")
    extra = body.get("extra_data") if isinstance(body.get("extra_data"), dict) else {}
    if client_id is not None:
        extra = {**extra, "client_id": str(client_id)}
    try:
        text, origins, outputs = await run_in_threadpool(_imported, prompt)
    except ConversionError as exc:
        return _conversion_refusal(prompt, exc)
    except UserError as exc:
        return _refusal("invalid_prompt", "Invalid prompt", exc.message)
    submission = Submission(text, [{}], 1 if body.get("front") else 0)
    client = None if client_id is None else str(client_id)
    numbers: list[int] = []

    def record(accepted: list[tuple[str, int]]) -> None:  # before the worker can start it: its node ids
        [(job_id, _)] = accepted
        numbers.append(_store(request).add(job_id, client, prompt, origins, outputs, extra))

    try:
        [(job_id, _)] = await accepted_soon(request.app.state, submission, record)
    except ApiError as exc:
        if exc.status != 422:
            raise
        return _validation_refusal(prompt, origins, exc.body.get("errors") or [])
    return JSONResponse({"prompt_id": job_id, "number": numbers[0], "node_errors": {}})


def _entry(found: ComfyPrompt | None, job: Job) -> list[Any]:
    """A queue or history item as ComfyUI lists it: [number, prompt_id, prompt, extra_data, outputs]."""
    if found is None:  # a job submitted through /api/jobs: no ComfyUI prompt behind it
        return [0, job.id, {}, {}, []]
    return [found.number, job.id, found.prompt, found.extra, found.outputs]


def _queue_info(queue: JobQueue, store: ComfyStore) -> dict[str, Any]:
    running = queue.list("running", 1000)
    pending = sorted(queue.list("queued", 10000), key=lambda job: (-job.priority, job.created))
    return {
        "queue_running": [_entry(store.get(job.id), job) for job in running],
        "queue_pending": [_entry(store.get(job.id), job) for job in pending],
    }


async def get_queue(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_queue_info, _queue(request), _store(request)))


async def get_prompt(request: Request) -> Response:
    """``GET /prompt``: {exec_info: {queue_remaining}}, as ComfyUI answers it."""
    counts = await run_in_threadpool(_queue(request).counts)
    return JSONResponse({"exec_info": {"queue_remaining": counts["queued"] + counts["running"]}})


async def post_queue(request: Request) -> Response:
    """``POST /queue`` {clear: true} cancels every queued prompt, {delete: [ids]} those named (a
    running one is left to /interrupt, as in ComfyUI)."""
    body = await json_body(request)
    if not isinstance(body, dict):
        return JSONResponse(
            {"error": "body must be {clear: bool} or {delete: [prompt ids]}"}, status_code=400
        )
    queue, state = _queue(request), request.app.state
    doomed = body.get("delete") if isinstance(body.get("delete"), list) else []
    if body.get("clear") is True:
        doomed = [job.id for job in await run_in_threadpool(queue.list, "queued", 10000)]
    for job_id in (str(item) for item in doomed):
        if await run_in_threadpool(queue.cancel, job_id):
            state.hub.publish("cancelled", job=job_id)
    publish_queue(state)
    return Response(status_code=200)


def images(job: Job, found: ComfyPrompt | None, outputs_dir: Path) -> dict[str, Any]:
    """{ComfyUI node id: {images: [{filename, subfolder, type}]}} of the files a job's nodes saved."""
    saved: dict[str, list[str]] = (job.report or {}).get("saved") or {}
    result: dict[str, Any] = {}
    for node, paths in saved.items():
        pictures = []
        for path in map(Path, paths):
            resolved = path.resolve()
            if resolved.is_relative_to(outputs_dir):
                subfolder = resolved.parent.relative_to(outputs_dir).as_posix()
                pictures.append(
                    {
                        "filename": path.name,
                        "subfolder": "" if subfolder == "." else subfolder,
                        "type": "output",
                    }
                )
        comfy_node = found.comfy_node(node) if found is not None else node
        result.setdefault(comfy_node, {"images": []})["images"].extend(pictures)
    return result


def _history_item(job: Job, found: ComfyPrompt | None, outputs_dir: Path) -> dict[str, Any]:
    done = job.state == "finished"
    status = "success" if done else "error"
    messages: list[Any] = [["execution_start", {"prompt_id": job.id}]]
    if job.state == "failed":
        messages.append(["execution_error", {"prompt_id": job.id, "exception_message": job.error}])
    elif job.state == "cancelled":
        messages.append(["execution_interrupted", {"prompt_id": job.id}])
    else:
        messages.append(["execution_success", {"prompt_id": job.id}])
    return {
        "prompt": _entry(found, job),
        "outputs": images(job, found, outputs_dir) if done else {},
        "status": {"status_str": status, "completed": done, "messages": messages},
    }


def _history(
    queue: JobQueue, store: ComfyStore, outputs_dir: Path, job_id: str | None, max_items: int | None
) -> dict[str, Any]:
    if job_id is not None:
        job = queue.get(job_id)
        jobs = [job] if job is not None else []
    else:
        jobs = list(reversed(queue.list(None, 10000)))
    ended = [job for job in jobs if job.state in ("finished", "failed", "cancelled")]
    if max_items is not None:
        ended = ended[-max_items:] if max_items else []
    return {job.id: _history_item(job, store.get(job.id), outputs_dir) for job in ended}


async def get_history(request: Request) -> Response:
    raw = request.query_params.get("max_items")
    if raw is not None and not raw.isdigit():
        return JSONResponse({"error": "'max_items' must be a whole number"}, status_code=400)
    args = (_queue(request), _store(request), data_folder(request, "output"))
    found = await run_in_threadpool(
        _history, *args, request.path_params.get("id"), None if raw is None else int(raw)
    )
    return JSONResponse(found)


def viewed_file(request: Request) -> Path | Response:
    """The file ``/view?filename&subfolder&type`` names, only inside the output or input folder."""
    query = request.query_params
    name, subfolder, kind = query.get("filename", ""), query.get("subfolder", ""), query.get("type", "output")
    if kind not in FOLDERS:
        return JSONResponse({"error": f"type must be one of {', '.join(FOLDERS)}"}, status_code=400)
    if not name or name.startswith("/") or ".." in name or "/" in name or "\\" in name or "\0" in name:
        return JSONResponse({"error": "filename must be a plain file name"}, status_code=400)
    base = data_folder(request, kind)
    folder = (base / subfolder).resolve() if "\0" not in subfolder else None
    if folder is None or not folder.is_relative_to(base):
        return JSONResponse({"error": "subfolder is outside the folder"}, status_code=403)
    path = folder / name
    if not path.is_file():
        return JSONResponse({"error": "no such file"}, status_code=404)
    return path


async def view(request: Request) -> Response:
    found = viewed_file(request)
    if isinstance(found, Response):
        return found
    media = mimetypes.guess_type(found.name)[0] or "application/octet-stream"
    return FileResponse(found, media_type=media, headers={"Content-Disposition": f'filename="{found.name}"'})


async def interrupt(request: Request) -> Response:
    """Stop the running prompt (only it, when the body names its ``prompt_id``) at its next step."""
    body = await json_body(request) if await request.body() else {}
    wanted = body.get("prompt_id") if isinstance(body, dict) else None
    worker = request.app.state.worker
    for job in await run_in_threadpool(_queue(request).list, "running", 100):
        if worker is not None and wanted in (None, job.id):
            worker.cancel(job.id)
    return Response(status_code=200)


async def get_object_info(request: Request) -> Response:
    info = await run_in_threadpool(object_info)
    name = request.path_params.get("node_class")
    if name is not None:
        info = {name: info[name]} if name in info else {}
    return JSONResponse(info)


def routes() -> list[BaseRoute]:
    """The ComfyUI routes, at ComfyUI's paths."""
    return [
        Route("/prompt", post_prompt, methods=["POST"]),
        Route("/prompt", get_prompt, methods=["GET"]),
        Route("/queue", get_queue, methods=["GET"]),
        Route("/queue", post_queue, methods=["POST"]),
        Route("/history", get_history, methods=["GET"]),
        Route("/history/{id}", get_history, methods=["GET"]),
        Route("/view", view, methods=["GET"]),
        Route("/object_info", get_object_info, methods=["GET"]),
        Route("/object_info/{node_class}", get_object_info, methods=["GET"]),
        Route("/interrupt", interrupt, methods=["POST"]),
        *comfy_ws.routes(),
    ]
