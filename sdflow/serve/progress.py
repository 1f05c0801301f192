"""One running job as the server follows it: the runner's events become hub events and per-node
progress, and a cancel or a shutdown stops the run at the next step boundary."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from sdflow.runner.core.events import Event, NodeFinished, NodeStarted, StepProgress

# what an event says of its node's state (GET /api/jobs/{id} ``nodes``)
NODE_STATES = {"node_started": "running", "step": "running", "node_cached": "cached", "node_finished": "ran"}


class JobCancelled(Exception):
    """Raised from a runner event when the job was cancelled: nothing after this point runs."""


class JobInterrupted(Exception):
    """Raised from a runner event when the server is stopping: the job goes back to the queue."""


class JobRun:
    """The listener of one job's run: publishes its events, keeps its per-node progress, and raises
    at a node start or a denoising step once ``cancel()`` or ``interrupt()`` was called."""

    def __init__(
        self,
        job_id: str,
        hub: Any,
        preview: Callable[[StepProgress], dict[str, str] | None] | None = None,
        preview_every: int = 0,
        cancelled: threading.Event | None = None,
    ) -> None:
        """``hub``: an EventHub, or anything with its ``publish(type, **fields)``; ``cancelled``: an
        event that cancels the run once set (``cancel()`` sets it too)."""
        self.job_id = job_id
        self.hub = hub
        self.preview = preview
        self.preview_every = preview_every
        self.started = time.time()
        self._lock = threading.Lock()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._cancelled = cancelled or threading.Event()
        self._interrupted = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def interrupt(self) -> None:
        self._interrupted.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise if the run must stop here (called at every step boundary)."""
        if self._cancelled.is_set():
            raise JobCancelled(self.job_id)
        if self._interrupted.is_set():
            raise JobInterrupted(self.job_id)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """{node id: {state: running|ran|cached, step, total, seconds}} so far."""
        with self._lock:
            return {node: dict(state) for node, state in self._nodes.items()}

    def publish(self, type: str, **fields: Any) -> None:
        if self.hub is not None:
            self.hub.publish(type, job=self.job_id, **fields)

    def record(self, type: str, **fields: Any) -> None:
        """Publish one of the job's events, keeping the per-node progress it tells (the events of a
        job on a Ray worker arrive here, made there by a JobRun of their own)."""
        state = NODE_STATES.get(type)
        if state is not None:
            node = fields["node"]
            with self._lock:
                if type == "node_started":
                    self._nodes[node] = {}
                kept = self._nodes.setdefault(node, {})
                kept["state"] = state
                for name in ("node_type", "step", "total", "seconds"):
                    if name in fields:
                        kept["type" if name == "node_type" else name] = fields[name]
        self.publish(type, **fields)

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeStarted):
            self.check()
            self.record("node_started", node=event.node_id, node_type=event.type)
        elif isinstance(event, StepProgress):
            self.record("step", node=event.node_id, step=event.index, total=event.total)
            self._maybe_preview(event)
            self.check()
        elif isinstance(event, NodeFinished):
            kind = "node_cached" if event.status == "cached" else "node_finished"
            self.record(kind, node=event.node_id, node_type=event.type, seconds=round(event.seconds, 6))

    def _maybe_preview(self, event: StepProgress) -> None:
        every = self.preview_every
        if self.preview is None or every <= 0 or self.hub is None:
            return
        if event.index % every and event.index != event.total:
            return
        picture = self.preview(event)
        if picture is not None:
            self.publish("preview", node=event.node_id, step=event.index, total=event.total, **picture)
