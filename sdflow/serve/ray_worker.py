"""`sdflow serve --workers N [--ray-address A]`: the server's jobs run on the Ray backend's workers
(``runner.scale``), each a warm Runner; the queue stays in the server's database.

One dispatcher thread claims a job for each idle Ray worker and collects the results: a worker
captures its files and the server writes them (numbered, never over an earlier file), so a cancelled
or interrupted job writes nothing. Node and step events stay on the workers: the hub hears started,
output and finished | failed | cancelled."""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from typing import Any

from sdflow.errors import UserError, internal_error, one_line
from sdflow.models.access import Sandbox
from sdflow.runner.scale.jobs import Failure, Job, render
from sdflow.runner.scale.many import Completed, FileWriter
from sdflow.serve.events import EventHub
from sdflow.serve.files import output_url
from sdflow.serve.queue import Job as QueuedJob
from sdflow.serve.queue import JobQueue
from sdflow.serve.settings import Settings
from sdflow.serve.validation import load_job
from sdflow.serve.webhooks import Webhooks

log = logging.getLogger("sdflow.serve")
POLL_SECONDS = 0.2


def sandboxed_render(sandbox: Sandbox, runner: Any, job: Job) -> Any:
    """``render`` on a Ray worker's runner, its files kept to the server's folders."""
    runner.sandbox = sandbox
    return render(runner, job)


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
        self._task = functools.partial(sandboxed_render, settings.sandbox())
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[Any, tuple[QueuedJob, str]] = {}  # object ref -> (job, worker name)
        self._doomed: set[str] = set()
        self._thread: threading.Thread | None = None
        self.error: str | None = None  # why the pool could not start, if it could not

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdflow-serve-ray", daemon=True)
        self._thread.start()

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
            refs = [ref for ref, (job, _) in self._running.items() if job.id == job_id]
        for ref in refs:  # a worker busy with it is interrupted where Ray can
            with contextlib.suppress(Exception):
                self.backend.ray.cancel(ref)

    def progress(self, job_id: str) -> dict[str, dict[str, Any]] | None:
        """Per-node progress stays on the workers: {} for a job running here, else None."""
        with self._lock:
            return {} if any(job.id == job_id for job, _ in self._running.values()) else None

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
                    for ref in ready:
                        self._collect(ref)
                else:
                    self._wake.wait(1.0)
                    self._wake.clear()
        finally:
            for job, _ in self._running.values():
                self.queue.requeue(job.id)
                self._publish("requeued", job.id)
            self._running.clear()
            self.backend.close()

    def _dispatch(self) -> None:
        """A queued job for every idle worker."""
        busy = {name for _, name in self._running.values()}
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
            ref = actor.run.remote(self._task, workflow, job.inputs, None, output_dir)
            with self._lock:
                self._running[ref] = (job, name)

    def _collect(self, ref: Any) -> None:
        with self._lock:
            job, name = self._running.pop(ref)
        ray = self.backend.ray
        try:
            value = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            value = None
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnschedulableError):
            self.backend.lose(name)
            self.queue.requeue(job.id)  # it runs again from the start on another worker
            self._publish("requeued", job.id)
            return
        except ray.exceptions.RayError as exc:
            value = Failure(one_line(internal_error(exc)), "cluster")
        self._ended(job, value)

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
            for path in report.files:
                url = output_url(self.settings.outputs, path)
                self._publish("output", job.id, node=None, file=path.rsplit("/", 1)[-1], url=url)
            self._publish("finished", job.id, seconds=round(report.seconds, 6), outputs=list(report.files))
        finished = self.queue.get(job.id)
        if finished is not None and finished.webhook:
            self.webhooks.call(finished.webhook, finished.summary())
