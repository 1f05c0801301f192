"""The worker: one thread with one long-lived Runner that claims queued jobs and runs them, telling the
event hub what happens; a cancel or a shutdown stops the running job at the next step boundary."""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdflow.errors import UserError, internal_error, one_line
from sdflow.nodes.types import SavedFiles
from sdflow.serve.events import EventHub
from sdflow.serve.files import output_url
from sdflow.serve.progress import JobCancelled, JobInterrupted, JobRun
from sdflow.serve.queue import Job, JobQueue
from sdflow.serve.settings import Settings
from sdflow.serve.validation import load_job
from sdflow.serve.webhooks import Webhooks

log = logging.getLogger("sdflow.serve")
PLANS_KEPT = 1024  # checked plans of accepted jobs waiting to run (older ones are planned again)


class Worker:
    """Runs jobs from ``queue`` one at a time, writing their files under ``DATA/outputs``."""

    def __init__(
        self,
        queue: JobQueue,
        settings: Settings,
        make_runner: Callable[[str], Any] | None = None,
        hub: EventHub | None = None,
        preview: Callable[[Any], dict[str, str] | None] | None = None,
        webhooks: Webhooks | None = None,
    ):
        self.queue = queue
        self.settings = settings
        self.output_dir = str(settings.outputs)
        self.hub = hub
        self.preview, self.preview_every = preview, settings.preview_every
        self.webhooks = webhooks or Webhooks()
        self._make_runner = make_runner or _default_runner
        self._runner: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._current: JobRun | None = None
        self._doomed: set[str] = set()  # jobs cancelled while running (or being claimed)
        self._plans: collections.OrderedDict[str, Any] = collections.OrderedDict()

    @property
    def idle(self) -> bool:
        """No job is running here."""
        return self._current is None

    def keep(self, job_id: str, plan: Any) -> None:
        """The plan ``job_id`` was checked with when accepted: its run uses it instead of validating
        and planning the job again (jobs from before a restart, or beyond PLANS_KEPT, plan again)."""
        with self._lock:
            self._plans[job_id] = plan
            while len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdflow-serve-worker", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A job was queued or the queue resumed: look now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop at the running job's next step boundary (it goes back to the queue), then end."""
        self._stop.set()
        with self._lock:
            if self._current is not None:
                self._current.interrupt()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def cancel(self, job_id: str) -> None:
        """Stop the running job ``job_id`` at its next step boundary (also when it is being claimed)."""
        with self._lock:
            self._doomed.add(job_id)
            if self._current is not None and self._current.job_id == job_id:
                self._current.cancel()

    def progress(self, job_id: str) -> dict[str, dict[str, Any]] | None:
        """The running job's per-node progress, or None when ``job_id`` is not running here."""
        with self._lock:
            current = self._current
        if current is None or current.job_id != job_id:
            return None
        return current.nodes()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_next():
                self._wake.wait(1.0)
                self._wake.clear()

    def run_next(self) -> bool:
        """Claim and run one job; False when the queue is empty or paused."""
        job = self.queue.claim()
        if job is None:
            return False
        self._run(job)
        return True

    def _listen(self, event: Any) -> None:
        """The runner's one listener: events go to the running job."""
        current = self._current
        if current is not None:
            current(event)

    def _run(self, job: Job) -> None:
        run = JobRun(job.id, self.hub, self.preview, self.preview_every)
        with self._lock:
            self._current = run
            if job.id in self._doomed:
                run.cancel()
            if self._stop.is_set():
                run.interrupt()
            plan = self._plans.pop(job.id, None)
        run.publish("started", attempt=job.attempts)
        try:
            run.check()
            if self._runner is None:
                self._runner = self._make_runner(self.output_dir)
                self._runner.subscribe(self._listen)
            if plan is not None and hasattr(self._runner, "run_checked"):
                result = self._runner.run_checked(plan)
            else:
                result = self._runner.run(load_job(job.workflow, self.settings.inputs), job.inputs)
        except JobCancelled:
            self.queue.cancelled(job.id)
            run.publish("cancelled")
        except JobInterrupted:
            self.queue.requeue(job.id)
            run.publish("requeued")
            return  # not ended: no webhook
        except UserError as exc:
            self._failed(run, one_line(str(exc)))
        except Exception as exc:  # a bug in a node must not stop the server: the job fails, with its line
            self._failed(run, one_line(internal_error(exc)))
        else:
            self._finished(run, result)
        finally:
            with self._lock:
                self._current = None
                self._doomed.discard(job.id)
        self._ended(job)

    def _failed(self, run: JobRun, error: str) -> None:
        self.queue.fail(run.job_id, error)
        run.publish("failed", error=error)

    def _finished(self, run: JobRun, result: Any) -> None:
        files = list(result.report.files)
        self.queue.finish(run.job_id, result.report.to_dict(), files)
        for node, values in result.outputs.items():
            for value in values.values():
                if isinstance(value, SavedFiles):
                    for path in value.paths:
                        url = output_url(self.output_dir, path)
                        run.publish("output", node=node, file=Path(path).name, url=url)
        run.publish("finished", seconds=round(result.report.seconds, 6), outputs=files)

    def _ended(self, claimed: Job) -> None:
        """A job reached its end: its webhook (if it has one) is called, off this thread."""
        if not claimed.webhook:
            return
        job = self.queue.get(claimed.id)
        if job is not None:
            self.webhooks.call(claimed.webhook, job.summary())


def _default_runner(output_dir: str) -> Any:
    """A CPU/GPU Runner with sdflow's defaults, writing under ``output_dir``."""
    from sdflow.runner.core.executor import Runner

    return Runner(output_dir=output_dir)
