"""`sdflow serve --workers N [--ray-address A]`: the server's jobs run on the Ray backend's workers
(``runner.scale``), each a warm Runner; the queue stays in the server's database.

One dispatcher thread claims a job for each idle Ray worker and follows it: the job is a Ray
streaming generator (``Worker.follow``) whose items are the job's node, step and preview events,
made on the worker by a JobRun as the in-process worker makes them, then its result. A worker
captures its files and the server writes them (numbered, never over an earlier file), so a cancelled
or interrupted job writes nothing. A cancel (``ray.cancel`` of the generator) stops the job on its
worker at the next step boundary."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdflow.errors import UserError, internal_error, one_line
from sdflow.models.access import Sandbox
from sdflow.runner.scale.jobs import Failure, Job, render
from sdflow.runner.scale.many import Completed, FileWriter
from sdflow.serve.events import EventHub
from sdflow.serve.files import output_url
from sdflow.serve.progress import JobCancelled, JobRun
from sdflow.serve.queue import Job as QueuedJob
from sdflow.serve.queue import JobQueue
from sdflow.serve.settings import Settings
from sdflow.serve.validation import load_job
from sdflow.serve.webhooks import Webhooks

log = logging.getLogger("sdflow.serve")
POLL_SECONDS = 0.2


_PREVIEWERS: dict[bool, Any] = {}  # on a worker: its Previewer (by allow_pickle), made once


class _Emitter:
    """A worker-side JobRun's hub: its events go to the job's stream as (type, fields)."""

    def __init__(self, emit: Callable[[Any], None]) -> None:
        self.emit = emit

    def publish(self, type: str, job: str = "", **fields: Any) -> None:
        self.emit((type, fields))


def followed_render(
    sandbox: Sandbox,
    preview_every: int,
    allow_pickle: bool,
    runner: Any,
    job: Job,
    emit: Callable[[Any], None],
    stop: threading.Event,
) -> Any:
    """``render`` on a Ray worker's runner (``Worker.follow``), its files kept to the server's
    folders; its events are emitted and it stops at the next step boundary once ``stop`` is set
    (returning None: cancelled)."""
    runner.sandbox = sandbox
    preview = None
    if preview_every:
        from sdflow.serve.preview import Previewer

        preview = _PREVIEWERS.setdefault(allow_pickle, Previewer(allow_pickle))
    run = JobRun("", _Emitter(emit), preview, preview_every, cancelled=stop)
    runner.listeners.append(run)
    try:
        return render(runner, job)
    except JobCancelled:
        return None
    finally:
        runner.listeners.remove(run)


@dataclass
class _Following:
    """A job running on a Ray worker: the worker's name and the job's events so far (``run``)."""

    job: QueuedJob
    worker: str
    run: JobRun


class RayWorker:
    """The server's worker over a ``RayBackend`` (``backend`` given: tests share one pool)."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        workers: int,
        address: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        hub: EventHub | None = None,
        preview: Any = None,
        webhooks: Webhooks | None = None,
        backend: Any = None,
    ) -> None:
        if backend is None:
            from sdflow.runner.scale.distributed import RayBackend

            backend = RayBackend(workers, address, device, dtype, allow_pickle=settings.allow_pickle)
        self.backend = backend
        self.queue, self.settings, self.hub = queue, settings, hub
        self.webhooks = webhooks or Webhooks()
        self.writer = FileWriter(str(settings.outputs))
        self._task = functools.partial(
            followed_render, settings.sandbox(), settings.preview_every, settings.allow_pickle
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[Any, _Following] = {}  # the job's stream (a Ray ObjectRefGenerator) -> it
        self._doomed: set[str] = set()
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # why the pool could not start, if it could not

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdflow-serve-ray", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """No job is running on the workers."""
        return not self._running

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop dispatching; jobs still on the workers go back to the queue (their files unwritten)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self, job_id: str) -> None:
        """The running job ``job_id`` ends as cancelled, its files never written."""
        with self._lock:
            self._doomed.add(job_id)
            streams = [stream for stream, running in self._running.items() if running.job.id == job_id]
        for stream in streams:  # its worker stops at the next step boundary
            with contextlib.suppress(Exception):
                self.backend.ray.cancel(stream)

    def progress(self, job_id: str) -> dict[str, dict[str, Any]] | None:
        """The running job's per-node progress, or None when ``job_id`` is not running here."""
        with self._lock:
            runs = [running.run for running in self._running.values() if running.job.id == job_id]
        return runs[0].nodes() if runs else None

    def _publish(self, type: str, job_id: str, **fields: Any) -> None:
        if self.hub is not None:
            self.hub.publish(type, job=job_id, **fields)

    def _loop(self) -> None:
        try:
            self.backend.start()
        except UserError as exc:
            self.error = one_line(str(exc))
            log.error("the Ray workers did not start: %s", self.error)
            return
        try:
            while not self._stop.is_set():
                self._dispatch()
                if self._running:
                    ready, _ = self.backend.ray.wait(list(self._running), num_returns=1, timeout=POLL_SECONDS)
                    for stream in ready:
                        self._advance(stream)
                else:
                    self._wake.wait(1.0)
                    self._wake.clear()
        finally:
            for running in self._running.values():
                self.queue.requeue(running.job.id)
                self._publish("requeued", running.job.id)
            self._running.clear()
            self.backend.close()

    def _dispatch(self) -> None:
        """A queued job for every idle worker."""
        busy = {running.worker for running in self._running.values()}
        for name, actor in list(self.backend.actors.items()):
            if name in busy:
                continue
            job = self.queue.claim()
            if job is None:
                return
            self._publish("started", job.id, attempt=job.attempts, worker=name)
            try:
                workflow = load_job(job.workflow, self.settings.inputs)
            except UserError as exc:
                self._ended(job, Failure(one_line(str(exc)), "user"))
                continue
            output_dir = str(self.settings.outputs)
            follow = actor.follow.options(num_returns="streaming")
            stream = follow.remote(self._task, workflow, job.inputs, None, output_dir)
            with self._lock:
                self._running[stream] = _Following(job, name, JobRun(job.id, self.hub))

    def _advance(self, stream: Any) -> None:
        """The stream's next item: events are published, a result ends the job."""
        running = self._running[stream]
        ray = self.backend.ray
        try:
            kind, item = ray.get(next(stream))
        except StopIteration:
            kind, item = "value", Failure("its worker sent no result", "cluster")
        except ray.exceptions.TaskCancelledError:
            kind, item = "value", None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError):
            self._forget(stream)
            self.backend.lose(running.worker)
            self.queue.requeue(running.job.id)  # it runs again from the start on another worker
            self._publish("requeued", running.job.id)
            return
        except ray.exceptions.RayError as exc:
            kind, item = "value", Failure(one_line(internal_error(exc)), "cluster")
        if kind == "events":
            for type, fields in item:
                running.run.record(type, **fields)
            return
        self._forget(stream)
        self._ended(running.job, item)

    def _forget(self, stream: Any) -> None:
        with self._lock:
            del self._running[stream]

    def _ended(self, job: QueuedJob, value: Any) -> None:
        with self._lock:
            doomed = job.id in self._doomed
            self._doomed.discard(job.id)
        if doomed or value is None:
            self.queue.cancelled(job.id)
            self._publish("cancelled", job.id)
        elif isinstance(value, Failure):
            self.queue.fail(job.id, value.message.replace("\n", "; "))
            self._publish("failed", job.id, error=value.message)
        else:
            result = self.writer.finish(Completed(0, value, "", 1), job.inputs)
            report = result.report
            self.queue.finish(job.id, report.to_dict(), list(report.files))
            by_node = [(node, path) for node, paths in report.saved.items() for path in paths]
            unsaid = [(None, path) for path in report.files if not any(path == p for _, p in by_node)]
            for node, path in by_node + unsaid:
                url = output_url(self.settings.outputs, path)
                self._publish("output", job.id, node=node, file=Path(path).name, url=url)
            self._publish("finished", job.id, seconds=round(report.seconds, 6), outputs=list(report.files))
        finished = self.queue.get(job.id) if job.webhook else None
        if finished is not None:
            self.webhooks.call(job.webhook, finished.summary())
