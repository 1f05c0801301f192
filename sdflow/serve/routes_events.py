"""WS /api/events: the event hub's JSON events as they happen (``?job=ID`` for one job's,
``?since=SEQ`` to get the kept events after SEQ first)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sdflow.serve.events import EventHub, Subscription


async def events(websocket: WebSocket) -> None:
    hub: EventHub = websocket.app.state.hub
    since_text, job = websocket.query_params.get("since"), websocket.query_params.get("job")
    if since_text is not None and not since_text.isdigit():
        await websocket.close(code=1008, reason="'since' must be an event number")
        return
    await websocket.accept()
    with hub.subscribe(int(since_text) if since_text else None, job) as subscription:
        await relay(websocket, subscription)


async def relay(
    websocket: WebSocket, subscription: Subscription, messages: Callable[[Any], list[Any]] = lambda e: [e]
) -> None:
    """Send ``messages(event)`` for each event of ``subscription`` until the client goes or the hub
    closes, then close the socket (also the ComfyUI ``/ws``, with its own messages)."""
    sender = asyncio.ensure_future(_send(websocket, subscription, messages))
    reader = asyncio.ensure_future(_drain(websocket))
    try:
        await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    with contextlib.suppress(Exception):
        await websocket.close()


async def _send(
    websocket: WebSocket, subscription: Subscription, messages: Callable[[Any], list[Any]]
) -> None:
    async for event in subscription:
        for message in messages(event):
            await websocket.send_json(message)


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it goes."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return


def routes() -> list[BaseRoute]:
    return [WebSocketRoute("/api/events", events)]
