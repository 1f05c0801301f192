"""The server's event hub: the worker thread publishes JSON events, async subscribers (WebSockets)
read them from bounded queues; a slow subscriber loses its oldest events, the worker never waits."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

# The event types and their fields (besides "type", "seq" and "time", which every event has):
#   queued {job, position}          started {job}            node_started {job, node, node_type}
#   node_cached {job, node, node_type, seconds}              step {job, node, step, total}
#   node_finished {job, node, node_type, seconds}            output {job, node, file, url}
#   preview {job, node, step, total, mime, image (base64)}   finished {job, seconds, outputs}
#   failed {job, error}             cancelled {job}          requeued {job} (SIGTERM mid-run)
#   queue {queued, running, paused}
JOB_END = ("finished", "failed", "cancelled")


class Subscription:
    """One subscriber's bounded queue of events; iterate it (``async for``) until the hub closes."""

    def __init__(self, hub: EventHub, size: int, job: str | None) -> None:
        self.hub = hub
        self.job = job
        self.dropped = 0  # events lost because this subscriber read too slowly
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(size)

    def offer(self, event: dict[str, Any] | None) -> None:
        """Add ``event`` (on the loop's thread); when full, drop the oldest to make room."""
        if event is not None and self.job is not None and event.get("job") != self.job:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self) -> dict[str, Any] | None:
        """The next event; None once the hub is closed."""
        return await self._queue.get()

    def pending(self) -> int:
        return self._queue.qsize()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (event := await self.get()) is not None:
            yield event

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventHub:
    """Events numbered in publish order (``seq`` from 1), the last ``history`` kept for late subscribers."""

    def __init__(self, buffer: int = 256, history: int = 1000) -> None:
        self.buffer = buffer
        self._lock = threading.Lock()
        self._seq = 0
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._subscribers: dict[Subscription, asyncio.AbstractEventLoop] = {}
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[Subscription, Any]]] = {}
        self._closed = False

    def publish(self, type: str, **fields: Any) -> dict[str, Any]:
        """Number, keep and send an event to every subscriber; safe from any thread, never blocks."""
        with self._lock:
            self._seq += 1
            event = {"type": type, "seq": self._seq, "time": round(time.time(), 3), **fields}
            self._history.append(event)
            for subscriber, loop in self._subscribers.items():
                self._deliver(loop, subscriber, event)
        return event

    def _deliver(self, loop: asyncio.AbstractEventLoop, subscriber: Subscription, event: Any) -> None:
        """Hand ``event`` to ``subscriber`` on its loop's thread (called with the lock held). Events
        wait in one batch per loop, which the loop takes all at once: a burst from the worker (a
        node's end, the next one's start, a step) wakes the loop once, not once per event."""
        batch = self._pending.get(loop)
        if batch is not None:  # the loop has not taken the batch yet: it takes this event too
            batch.append((subscriber, event))
            return
        self._pending[loop] = [(subscriber, event)]
        try:
            if asyncio._get_running_loop() is loop:  # publishing on the loop itself: no wake-up needed
                loop.call_soon(self._flush, loop)
            else:
                loop.call_soon_threadsafe(self._flush, loop)
        except RuntimeError:  # a closed loop: its subscribers are gone
            del self._pending[loop]

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: offer the events waiting for its subscribers, in publish order."""
        with self._lock:
            batch = self._pending.pop(loop, [])
        for subscriber, event in batch:
            subscriber.offer(event)

    def subscribe(self, since: int | None = None, job: str | None = None) -> Subscription:
        """A new subscription on the running loop, optionally to one job's events; with ``since``,
        the kept events after that ``seq`` come first (no gap, no repeat)."""
        loop = asyncio.get_running_loop()
        subscriber = Subscription(self, self.buffer, job)
        with self._lock:
            if since is not None:
                for event in self._history:
                    if event["seq"] > since:
                        subscriber.offer(event)
            if self._closed:
                subscriber.offer(None)
            else:
                self._subscribers[subscriber] = loop
        return subscriber

    def unsubscribe(self, subscriber: Subscription) -> None:
        with self._lock:
            self._subscribers.pop(subscriber, None)

    def recent(self, job: str | None = None) -> list[dict[str, Any]]:
        """The kept events (of one job), oldest first."""
        with self._lock:
            return [e for e in self._history if job is None or e.get("job") == job]

    @property
    def last_seq(self) -> int:
        return self._seq

    def close(self) -> None:
        """End every subscription (their iteration stops); later subscriptions end at once."""
        with self._lock:
            self._closed = True
            for subscriber, loop in self._subscribers.items():
                self._deliver(loop, subscriber, None)
            self._subscribers.clear()
