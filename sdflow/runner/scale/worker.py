"""The worker side of a Ray backend: one long-lived Runner per worker process (a Ray actor)."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sdflow.graphs.model import Workflow
from sdflow.runner.core.events import Listener
from sdflow.runner.scale.jobs import Failure, Job, attempt

FOLLOW_SECONDS = 0.05  # how often a followed job's cancel flag is looked at while it emits nothing


class Worker:
    """Holds a Runner whose caches stay warm between jobs: the checkpoint is loaded once per worker."""

    def __init__(
        self,
        name: str,
        device: str,
        dtype: str | None,
        threads: int,
        listeners: Iterable[Listener] = (),
        allow_pickle: bool = False,
    ) -> None:
        import torch

        from sdflow.nodes import registry
        from sdflow.runner.core.executor import Runner

        registry.all_types()  # import the node library now, not in the first job
        torch.set_num_threads(threads)
        self.name = name
        # A listener, so node warnings stay in each run's report (the driver shows them) rather than
        # going to this process's stderr as Python warnings.
        listening = [*listeners] or [_ignore]
        self.runner = Runner(device=device, dtype=dtype, listeners=listening, allow_pickle=allow_pickle)

    def run(
        self,
        task: Callable[[Any, Job], Any],
        workflow: Workflow,
        inputs: dict[str, Any],
        outputs: tuple[str, ...] | None,
        output_dir: str | None,
    ) -> Any:
        """``task(runner, job)``; a Failure instead of any exception the job raises."""
        return attempt(task, self.runner, Job(workflow, inputs, outputs, output_dir))

    def follow(
        self,
        task: Callable[[Any, Job, Callable[[Any], None], threading.Event], Any],
        workflow: Workflow,
        inputs: dict[str, Any],
        outputs: tuple[str, ...] | None,
        output_dir: str | None,
    ) -> Iterator[tuple[str, Any]]:
        """``run`` as a Ray streaming generator (``num_returns="streaming"``) for callers that follow
        the job: ``task(runner, job, emit, stop)`` runs on a thread of its own while this yields
        ("events", [what it emitted since the last yield]), then ("value", its value or a Failure).
        A ``ray.cancel`` of the call sets ``stop``; the task stops where it checks it."""
        from ray import get_runtime_context

        emitted: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stop = threading.Event()
        done = object()
        value: list[Any] = []

        def work() -> None:
            try:
                value.append(
                    attempt(lambda runner, job: task(runner, job, emitted.put, stop), self.runner, job)
                )
            finally:
                emitted.put(done)

        job = Job(workflow, inputs, outputs, output_dir)
        thread = threading.Thread(target=work, name=f"sdflow-{self.name}-job", daemon=True)
        thread.start()
        context = get_runtime_context()
        try:
            finished = False
            while not finished:
                batch = []
                try:
                    batch.append(emitted.get(timeout=FOLLOW_SECONDS))
                    while True:  # everything emitted meanwhile goes in one message
                        batch.append(emitted.get_nowait())
                except queue.Empty:
                    pass
                if batch and batch[-1] is done:
                    batch.pop()
                    finished = True
                if batch:
                    yield "events", batch
                if not stop.is_set() and context.is_canceled():
                    stop.set()
        finally:  # the next job on this worker starts only once this one stopped
            stop.set()
            thread.join()
        lost = Failure(f"the job's thread on {self.name} ended abruptly", "bug")
        yield "value", value[0] if value else lost

    def pid(self) -> int:
        return os.getpid()


def _ignore(event: object) -> None:
    """A listener that needs nothing."""
