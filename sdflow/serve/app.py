"""The HTTP API: a Starlette app over the job queue, with bearer-token auth and a body size limit."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sdflow.serve import comfy_routes, web_routes
from sdflow.serve.bodies import ApiError
from sdflow.serve.bodies import json_body as _json_body
from sdflow.serve.nodes_json import node_types
from sdflow.serve.queue import STATES, JobQueue
from sdflow.serve.validation import problems
from sdflow.serve.worker import Worker

MAX_BODY = 32 * 1024 * 1024


class TokenAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer TOKEN`` (constant-time compare)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _submission(body: Any) -> tuple[str, dict[str, Any], int]:
    """``workflow``, ``inputs`` and ``priority`` from a POST /api/jobs body, types checked (422)."""
    if not isinstance(body, dict):
        raise ApiError(422, "body must be a JSON object {workflow, inputs, priority}")
    unknown = sorted(set(body) - {"workflow", "inputs", "priority"})
    if unknown:
        raise ApiError(422, f"unknown field(s): {', '.join(unknown)}")
    workflow, inputs, priority = body.get("workflow"), body.get("inputs", {}), body.get("priority", 0)
    if not isinstance(workflow, str):
        raise ApiError(422, "'workflow' must be the workflow's YAML text (a string)")
    if not isinstance(inputs, dict):
        raise ApiError(422, "'inputs' must be an object {name: value}")
    return workflow, inputs, _priority(priority)


def _priority(value: Any) -> int:
    """A job priority from JSON: an integer (higher runs first), else 422."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**62:
        raise ApiError(422, "'priority' must be an integer")
    return value


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def submit_job(request: Request) -> JSONResponse:
    workflow, inputs, priority = _submission(await _json_body(request))
    errors = await run_in_threadpool(problems, workflow, inputs)
    if errors:
        raise ApiError(422, "the workflow does not validate", errors=errors)
    job_id, position = await run_in_threadpool(_queue(request).submit, workflow, inputs, priority)
    worker: Worker | None = request.app.state.worker
    if worker is not None:
        worker.notify()
    return JSONResponse({"id": job_id, "position": position}, status_code=201)


def _int_param(request: Request, name: str, default: int, top: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > top:
        raise ApiError(422, f"'{name}' must be an integer from 0 to {top}")
    return int(raw)


async def list_jobs(request: Request) -> JSONResponse:
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise ApiError(422, f"'state' must be one of {', '.join(STATES)}")
    limit = _int_param(request, "limit", 100, 1000)
    offset = _int_param(request, "offset", 0, 2**62)
    jobs = await run_in_threadpool(_queue(request).list, state, limit, offset)
    return JSONResponse({"jobs": [job.summary() for job in jobs]})


async def get_job(request: Request) -> JSONResponse:
    job = await run_in_threadpool(_queue(request).get, request.path_params["id"])
    if job is None:
        raise ApiError(404, f"no job '{request.path_params['id']}'")
    return JSONResponse(job.summary())


async def cancel_job(request: Request) -> JSONResponse:
    job_id = request.path_params["id"]
    queue = _queue(request)
    if await run_in_threadpool(queue.cancel, job_id):
        return JSONResponse({"id": job_id, "state": "cancelled"})
    job = await run_in_threadpool(queue.get, job_id)
    if job is None:
        raise ApiError(404, f"no job '{job_id}'")
    raise ApiError(409, f"job '{job_id}' is {job.state}: only a queued job can be cancelled yet")


async def change_job(request: Request) -> JSONResponse:
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {"priority"}:
        raise ApiError(422, 'body must be {"priority": INTEGER}')
    job_id, priority = request.path_params["id"], _priority(body["priority"])
    queue = _queue(request)
    if await run_in_threadpool(queue.reprioritize, job_id, priority):
        return JSONResponse((await run_in_threadpool(queue.get, job_id)).summary())
    job = await run_in_threadpool(queue.get, job_id)
    if job is None:
        raise ApiError(404, f"no job '{job_id}'")
    raise ApiError(409, f"job '{job_id}' is {job.state}: only a queued job's priority can change")


async def list_nodes(request: Request) -> JSONResponse:
    return JSONResponse({"nodes": await run_in_threadpool(node_types)})


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    """A bug answers one JSON line, never a traceback."""
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(
    data_dir: str | Path,
    token: str | None = None,
    max_body: int = MAX_BODY,
    worker: bool = True,
    make_runner: Callable[[str], Any] | None = None,
) -> Starlette:
    """The server app on ``data_dir``'s queue; ``make_runner(output_dir)`` makes the worker's Runner,
    ``worker=False`` queues jobs without running them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.queue = JobQueue(data_dir)
        app.state.worker = Worker(app.state.queue, data_dir, make_runner) if worker else None
        if app.state.worker is not None:
            app.state.worker.start()
        try:
            yield
        finally:
            if app.state.worker is not None:
                app.state.worker.stop()
            app.state.queue.close()

    routes = [
        Route("/api/jobs", submit_job, methods=["POST"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/{id}", get_job, methods=["GET"]),
        Route("/api/jobs/{id}", cancel_job, methods=["DELETE"]),
        Route("/api/jobs/{id}", change_job, methods=["PATCH"]),
        Route("/api/nodes", list_nodes, methods=["GET"]),
        *comfy_routes.routes(),
        *web_routes.routes(),
    ]
    middleware = [Middleware(TokenAuth, token=token)] if token else []
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _bug}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.max_body = max_body
    return app
