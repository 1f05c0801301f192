"""``WS /ws?clientId=``: the server's events (serve/events.py) as ComfyUI's WebSocket messages, each
``{"type", "data"}``: status, execution_start, execution_cached, executing (``node: null`` at the end
of a prompt, whatever its outcome), progress, executed, execution_success, execution_error and
execution_interrupted. Node ids are the ComfyUI ids a prompt's nodes were imported from. A prompt's
messages go to the client that sent it (its ``client_id``), as ComfyUI does; those of prompts sent
without one, and of jobs from /api/jobs, to every client."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from sdflow.serve.comfy_store import ComfyPrompt, ComfyStore, store_of
from sdflow.serve.files import OUTPUTS_ROUTE
from sdflow.serve.routes_events import relay

Message = dict[str, Any]


def status(queue: Any) -> Message:
    """ComfyUI's status message: how many prompts wait or run."""
    counts = queue.active()
    return _status(counts["queued"] + counts["running"])


def _status(remaining: int) -> Message:
    return {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}}}


def _image(event: dict[str, Any]) -> dict[str, str]:
    """{filename, subfolder, type} of an ``output`` event's file, from its /api/outputs/ URL."""
    relative = unquote(event.get("url") or "").removeprefix(OUTPUTS_ROUTE)
    subfolder, _, name = relative.rpartition("/")
    return {"filename": name or str(event.get("file")), "subfolder": subfolder, "type": "output"}


@dataclass
class _Run:
    """What one prompt's messages so far imply: the node last said to be executing, the node whose
    start is held back until it is known whether it ran or came from the cache, its pictures."""

    executing: str | None = None
    held: str | None = None
    images: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    node_types: dict[str, str] = field(default_factory=dict)


class Translator:
    """The ComfyUI messages one client gets for each hub event."""

    def __init__(self, store: ComfyStore, client_id: str) -> None:
        self.store = store
        self.client_id = client_id
        self.runs: dict[str, _Run] = {}

    def __call__(self, event: dict[str, Any]) -> list[Message]:
        kind = event.get("type")
        if kind == "queue":
            return [_status(int(event.get("queued", 0)) + int(event.get("running", 0)))]
        job = event.get("job")
        if not isinstance(job, str):
            return []
        prompt = self.store.get(job)
        if prompt is not None and prompt.client_id not in (None, self.client_id):
            return []  # another client's prompt
        return self._job_messages(kind, job, prompt, event)

    def _job_messages(
        self, kind: Any, job: str, prompt: ComfyPrompt | None, event: dict[str, Any]
    ) -> list[Message]:
        stamp = {"prompt_id": job, "timestamp": int(float(event.get("time", 0)) * 1000)}
        node = None if event.get("node") is None else str(event["node"])
        comfy = node if prompt is None or node is None else prompt.comfy_node(node)
        if kind == "started":
            self.runs[job] = _Run()
            return [{"type": "execution_start", "data": stamp}]
        run = self.runs.setdefault(job, _Run())
        if comfy is not None and event.get("node_type"):
            run.node_types.setdefault(comfy, str(event["node_type"]))
        if kind == "node_started":
            messages = self._release(job, run)
            run.held = comfy
            return messages
        if kind == "node_cached":
            if run.held == comfy:
                run.held = None
            return [{"type": "execution_cached", "data": {"nodes": [comfy], **stamp}}]
        messages = self._release(job, run)
        if kind == "step":
            value, top = event.get("step"), event.get("total")
            messages.append(
                {"type": "progress", "data": {"value": value, "max": top, "prompt_id": job, "node": comfy}}
            )
        elif kind == "output" and comfy is not None:
            run.images.setdefault(comfy, []).append(_image(event))
        elif kind in ("finished", "failed", "cancelled"):
            messages += self._ended(kind, job, run, event, stamp)
        return messages

    def _release(self, job: str, run: _Run) -> list[Message]:
        """The held-back node ran (something else happened since it started): it is executing."""
        node, run.held = run.held, None
        if node is None or node == run.executing:
            return []
        run.executing = node
        return [{"type": "executing", "data": {"node": node, "display_node": node, "prompt_id": job}}]

    def _ended(
        self, kind: str, job: str, run: _Run, event: dict[str, Any], stamp: dict[str, Any]
    ) -> list[Message]:
        del self.runs[job]
        node = run.executing
        where = {"node_id": node, "node_type": run.node_types.get(node or ""), "executed": []}
        messages: list[Message] = []
        if kind == "finished":
            for comfy, pictures in run.images.items():
                data = {
                    "node": comfy,
                    "display_node": comfy,
                    "output": {"images": pictures},
                    "prompt_id": job,
                }
                messages.append({"type": "executed", "data": data})
            messages.append({"type": "execution_success", "data": stamp})
        elif kind == "failed":
            error = {"exception_message": str(event.get("error")), "exception_type": "", "traceback": []}
            data = {**stamp, **where, **error, "current_inputs": {}, "current_outputs": {}}
            messages.append({"type": "execution_error", "data": data})
        else:
            messages.append({"type": "execution_interrupted", "data": {**stamp, **where}})
        messages.append({"type": "executing", "data": {"node": None, "display_node": None, "prompt_id": job}})
        return messages


async def comfy_socket(websocket: WebSocket) -> None:
    client_id = websocket.query_params.get("clientId") or uuid.uuid4().hex
    state = websocket.app.state
    translate = Translator(store_of(state), client_id)
    await websocket.accept()
    with state.hub.subscribe() as subscription:
        first = status(state.queue)
        first["data"]["sid"] = client_id
        await websocket.send_json(first)
        await relay(websocket, subscription, translate)


def routes() -> list[BaseRoute]:
    return [WebSocketRoute("/ws", comfy_socket)]
