"""The worker: one thread with one long-lived Runner that claims queued jobs and runs them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdflow.errors import UserError, internal_error, one_line
from sdflow.graphs.yaml_io import loads
from sdflow.serve.queue import Job, JobQueue


class Worker:
    """Runs jobs from ``queue`` one at a time, writing their files under ``DATA/outputs``."""

    def __init__(
        self, queue: JobQueue, data_dir: str | Path, make_runner: Callable[[str], Any] | None = None
    ):
        self.queue = queue
        self.output_dir = str(Path(data_dir).resolve() / "outputs")
        self._make_runner = make_runner or _default_runner
        self._runner: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sdflow-serve-worker", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A job was queued: look for it now rather than at the next poll."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the current job, then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.run_next():
                self._wake.wait(1.0)
                self._wake.clear()

    def run_next(self) -> bool:
        """Claim and run one job; False when the queue is empty."""
        job = self.queue.claim()
        if job is None:
            return False
        self._run(job)
        return True

    def _run(self, job: Job) -> None:
        try:
            if self._runner is None:
                self._runner = self._make_runner(self.output_dir)
            workflow = loads(job.workflow, file="<job>")
            result = self._runner.run(workflow, job.inputs)
        except UserError as exc:
            self.queue.fail(job.id, one_line(str(exc)))
            return
        except Exception as exc:  # a bug in a node must not stop the server: the job fails, with its line
            self.queue.fail(job.id, one_line(internal_error(exc)))
            return
        self.queue.finish(job.id, result.report.to_dict(), list(result.report.files))


def _default_runner(output_dir: str) -> Any:
    """A CPU/GPU Runner with sdflow's defaults, writing under ``output_dir``."""
    from sdflow.runner.core.executor import Runner

    return Runner(output_dir=output_dir)
