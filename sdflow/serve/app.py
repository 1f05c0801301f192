"""The server app: Starlette over the job queue, the worker and the event hub, with bearer-token auth,
a request body limit and CORS only when asked for. Routes live in the ``routes_*`` modules; other
packages add theirs through ``sdflow.serve.extensions``."""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdflow.serve import extensions, routes_events, routes_files, routes_jobs
from sdflow.serve.bodies import Answer, ApiError
from sdflow.serve.events import EventHub
from sdflow.serve.queue import JobQueue
from sdflow.serve.settings import MAX_BODY, settings_for
from sdflow.serve.worker import Worker


class TokenAuth:
    """ASGI middleware: every HTTP request and WebSocket needs ``Authorization: Bearer TOKEN`` or
    ``?token=TOKEN`` (for browsers' WebSockets and links); compared in constant time."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = token.encode()

    def _given(self, scope: Scope) -> bytes:
        header = dict(scope.get("headers", [])).get(b"authorization", b"")
        if header.startswith(b"Bearer "):
            return header[len(b"Bearer ") :]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        return query[0].encode("latin-1", "replace") if query else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and not hmac.compare_digest(
            self._given(scope), self.expected
        ):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = Answer({"error": "missing or wrong bearer token"}, status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is refused with 413, whether its length is
    declared or it arrives in chunks (the routes see an ApiError while reading)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = Answer({"error": f"request body over {self.limit} bytes"}, status_code=413)
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise ApiError(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _api_error(request: Request, exc: Exception) -> Answer:
    assert isinstance(exc, ApiError)
    return Answer(exc.body, status_code=exc.status)


async def _http_error(request: Request, exc: Exception) -> Answer:
    assert isinstance(exc, HTTPException)
    return Answer({"error": exc.detail}, status_code=exc.status_code)


async def _bug(request: Request, exc: Exception) -> Answer:
    """A bug answers one JSON line, never a traceback."""
    return Answer({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(
    data_dir: str | Path,
    token: str | None = None,
    max_body: int = MAX_BODY,
    worker: bool = True,
    make_runner: Callable[[str], Any] | None = None,
    allow_pickle: bool = False,
    preview_every: int = 0,
    cors: list[str] | None = None,
    make_worker: Callable[..., Any] | None = None,
    sync: str = "normal",
) -> Starlette:
    """The server app on ``data_dir``'s queue; ``make_runner(output_dir)`` makes the worker's Runner,
    ``worker=False`` queues jobs without running them; ``make_worker`` replaces the in-process worker
    (``--workers N``: Ray). ``cors``: origins allowed to call from a browser (none by default)."""
    settings = settings_for(
        data_dir, max_body=max_body, allow_pickle=allow_pickle, preview_every=preview_every, sync=sync
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = app.state
        state.hub = EventHub()
        state.queue = JobQueue(settings.data, settings.sync)
        state.worker = None
        if worker:
            build = make_worker or Worker
            state.worker = build(
                state.queue,
                settings,
                make_runner=_sandboxed(make_runner, settings),
                hub=state.hub,
                preview=_previewer(settings) if preview_every else None,
            )
            state.worker.start()
        try:
            yield
        finally:
            if state.worker is not None:
                state.worker.stop()
            state.hub.close()
            state.queue.close()

    routes = [*routes_jobs.routes(), *routes_files.routes(), *routes_events.routes(), *extensions.routes()]
    middleware = []
    if cors:
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(
            Middleware(CORSMiddleware, allow_origins=cors, allow_methods=["*"], allow_headers=["*"])
        )
    middleware.append(Middleware(BodyLimit, limit=max_body))
    if token:
        middleware.append(Middleware(TokenAuth, token=token))
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _bug}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.settings = settings
    return app


def _sandboxed(make_runner: Callable[[str], Any] | None, settings: Any) -> Callable[[str], Any]:
    """The worker's runner maker, its runs kept to the server's folders (``Settings.sandbox``)."""

    def make(output_dir: str) -> Any:
        if make_runner is not None:
            runner = make_runner(output_dir)
        else:
            from sdflow.runner.core.executor import Runner

            runner = Runner(output_dir=output_dir, allow_pickle=settings.allow_pickle)
        runner.sandbox = settings.sandbox()
        return runner

    return make


def _previewer(settings: Any) -> Callable[[Any], dict[str, str] | None]:
    """Previews by the step's model: its tiny autoencoder if found, else its family's factors."""
    from sdflow.serve.preview import Previewer

    return Previewer(settings.allow_pickle)
