"""The worker side of a Ray backend: one long-lived Runner per worker process (a Ray actor)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from sdflow.graphs.model import Workflow
from sdflow.runner.core.events import Listener
from sdflow.runner.scale.jobs import Job, attempt


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

    def pid(self) -> int:
        return os.getpid()


def _ignore(event: object) -> None:
    """A listener that needs nothing."""
