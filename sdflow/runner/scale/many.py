"""One workflow, many inputs: run the jobs on a backend and write their files as a serial run would.

A backend (``LocalBackend`` here, ``RayBackend`` in ``distributed``) runs jobs in any order and
yields each as it completes. The files they captured are written here, by the driver, in job order,
so names are numbered exactly as one ``Runner`` running the jobs one after the other numbers them.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from sdflow.files import write_new
from sdflow.graphs.model import Workflow
from sdflow.runner.core.executor import Runner
from sdflow.runner.core.plan import check
from sdflow.runner.core.report import RunReport
from sdflow.runner.core.shared import default_runner
from sdflow.runner.scale.jobs import Failure, Job, attempt, plain_workflow, render

Task = Callable[[Any, Job], Any]
# Stand-in paths handed out by workers -> the files written for them. A worker whose SaveImage comes
# from its cache reports the stand-ins of the run that wrote the files, in this call or an earlier one.
WRITTEN: dict[str, str] = {}


@dataclass(frozen=True)
class Completed:
    """A job a backend finished: its index, the task's value (or a Failure), who ran it, in how many tries."""

    index: int
    value: Any
    worker: str
    attempts: int


class Backend(Protocol):
    """Runs ``task(runner, job)`` for every job on its workers; yields each as it completes."""

    allow_pickle: bool  # whether its runners may load pickle weight files

    def map(self, task: Task, jobs: Sequence[Job]) -> Generator[Completed, None, None]: ...


class LocalBackend:
    """Every job in this process, one after the other, on one Runner (the default one if not given)."""

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner

    @property
    def allow_pickle(self) -> bool:
        return self.runner.allow_pickle if self.runner is not None else False

    def map(self, task: Task, jobs: Sequence[Job]) -> Generator[Completed, None, None]:
        runner = self.runner or default_runner()
        for index, job in enumerate(jobs):
            yield Completed(index, attempt(task, runner, job), "local", 1)


@dataclass
class JobResult:
    """One run of ``run_many``: its report (files as written) or its failure, and the worker that ran it."""

    index: int
    inputs: dict[str, Any]
    worker: str
    attempts: int
    report: RunReport | None = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def error(self) -> str | None:
        """The failure in one message (None when the run succeeded)."""
        return self.failure.message if self.failure is not None else None

    @property
    def user_error(self) -> bool:
        """The run failed on a mistake the user can fix (exit code 2 on the command line)."""
        return self.failure is not None and self.failure.kind == "user"

    @property
    def files(self) -> list[str]:
        return self.report.files if self.report is not None else []

    def to_dict(self) -> dict[str, Any]:
        if self.failure is not None:
            body: dict[str, Any] = {
                "inputs": self.inputs,
                "error": self.error,
                "error_kind": self.failure.kind,
            }
        else:
            body = self.report.to_dict() if self.report is not None else {}
        return {**body, "worker": self.worker, "attempts": self.attempts}


def run_many(
    workflow: Workflow,
    inputs: Iterable[dict[str, Any]],
    backend: Backend | None = None,
    outputs: Iterable[str] | None = None,
    output_dir: str = "outputs",
    on_result: Callable[[JobResult], None] | None = None,
) -> list[JobResult]:
    """Run ``workflow`` once per inputs on ``backend`` (default: in this process), files into
    ``output_dir``; results in job order. Every job is checked before any runs (UserError); a job
    failing while it runs is reported in its result and the others go on. ``on_result`` sees each
    result as soon as its files are written."""
    workflow = plain_workflow(workflow)
    targets = tuple(outputs) if outputs is not None else None
    given = [dict(values) for values in inputs]
    backend = backend or LocalBackend()
    for values in given:
        check(workflow, values, targets, allow_pickle=backend.allow_pickle)
    writer = FileWriter(output_dir)
    jobs = [Job(workflow, values, targets, writer.absolute) for values in given]
    results: list[JobResult] = []
    completions = backend.map(render, jobs)
    try:
        for done in in_job_order(completions):
            results.append(writer.finish(done, given[done.index]))
            if on_result is not None:
                on_result(results[-1])
    finally:  # Ctrl-C or an error here: the backend stops its work at once
        completions.close()
    return results


def in_job_order(completions: Iterable[Completed]) -> Iterator[Completed]:
    """Completed jobs (in any order, numbered from 0) re-ordered: each once all earlier ones are out."""
    waiting: dict[int, Completed] = {}
    following = 0
    for done in completions:
        waiting[done.index] = done
        while following in waiting:
            yield waiting.pop(following)
            following += 1


class FileWriter:
    """Writes the files a job captured into the output folder (call it in job order)."""

    def __init__(self, output_dir: str) -> None:
        self.given = str(output_dir)
        self.absolute = str(Path(output_dir).resolve())

    def finish(self, done: Completed, inputs: dict[str, Any]) -> JobResult:
        """The job's result, its files written and the report naming them."""
        result = JobResult(done.index, inputs, done.worker, done.attempts)
        value = done.value
        if isinstance(value, Failure):
            result.failure = value
            return result
        for pending in value.files:
            written = write_new(
                self._local(pending.folder), pending.stem, pending.suffix, _bytes(pending.data)
            )
            WRITTEN[pending.token] = str(written)
        files = [WRITTEN.get(path, path) for path in value.report.files]
        saved = {
            node: [WRITTEN.get(path, path) for path in paths] for node, paths in value.report.saved.items()
        }
        result.report = replace(value.report, files=files, saved=saved)
        return result

    def _local(self, folder: str) -> str:
        """A worker's folder (under the absolute output folder) as the user gave the output folder."""
        if not Path(folder).is_relative_to(self.absolute):
            return folder
        return str(Path(self.given, Path(folder).relative_to(self.absolute)))


def _bytes(data: bytes) -> Callable[[Any], None]:
    return lambda handle: handle.write(data)
