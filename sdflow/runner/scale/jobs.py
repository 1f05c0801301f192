"""Jobs for many-run backends: what a worker is sent, what it does, and what it sends back.

A job is a workflow with its inputs. A worker runs it on its long-lived Runner with the output
files *captured* (their bytes and intended names), so only the driver touches the output folder and
numbers files exactly as a serial run would.
"""

from __future__ import annotations

import io
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO, Literal

from sdflow.errors import DEBUG_HINT, UserError, internal_error, one_line
from sdflow.graphs.model import Workflow
from sdflow.runner.core.report import RunReport

PENDING = "sdflow-pending-"  # file names a worker hands out before the driver has written the file


@dataclass(frozen=True)
class Job:
    """One run: a workflow, its inputs (seeds included), the nodes to compute (None: the output
    nodes) and the output folder (None: the runner's)."""

    workflow: Workflow
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    output_dir: str | None = None


@dataclass(frozen=True)
class PendingFile:
    """A file an output node asked to write: where and under which stem, and its bytes."""

    token: str  # the stand-in path the node was given (and reports), until the driver writes it
    folder: str
    stem: str
    suffix: str
    data: bytes


class FileCapture:
    """A ``RunContext.write_new`` that keeps the files instead of writing them."""

    def __init__(self) -> None:
        self.files: list[PendingFile] = []

    def __call__(self, folder: Path | str, stem: str, suffix: str, write: Callable[[BinaryIO], None]) -> Path:
        buffer = io.BytesIO()
        write(buffer)
        token = str(Path(folder, f"{PENDING}{uuid.uuid4().hex}{suffix}"))
        self.files.append(PendingFile(token, str(folder), stem, suffix, buffer.getvalue()))
        return Path(token)


@dataclass(frozen=True)
class Rendered:
    """What ``render`` sends back: the run report (files as tokens) and the captured files."""

    report: RunReport
    files: list[PendingFile]


@dataclass(frozen=True)
class Failure:
    """A job that did not finish: ``user`` (a UserError, its message says where), ``bug`` (any
    other exception: one line, its traceback kept apart) or ``cluster`` (its workers kept dying)."""

    message: str
    kind: Literal["user", "bug", "cluster"]
    traceback: str = ""

    def lines(self, subject: str, debug: bool = False) -> list[str]:
        """How the command line shows it, about ``subject`` (a run, a file): ``error:`` lines for a
        mistake or a cluster fault; for a bug, one internal-error line with the --debug hint, or its
        traceback and then the line when ``debug``."""
        if self.kind != "bug":
            return [f"error: {subject}: {line}" for line in self.message.split("\n")]
        if debug:
            return [self.traceback.rstrip(), f"{subject}: {self.message}"]
        return [f"{subject}: {self.message} {DEBUG_HINT}"]


def render(runner: Any, job: Job) -> Rendered:
    """The task behind ``run_many``: run ``job`` with its output files captured, not written."""
    capture = FileCapture()
    previous, runner.write_new = runner.write_new, capture
    try:
        result = runner.run(job.workflow, job.inputs, job.outputs, job.output_dir)
    finally:
        runner.write_new = previous
    return Rendered(result.report, capture.files)


def attempt(task: Callable[[Any, Job], Any], runner: Any, job: Job) -> Any:
    """``task(runner, job)``, with any exception turned into a Failure the driver can report."""
    try:
        return task(runner, job)
    except UserError as exc:  # one line per error, as the command line shows them
        return Failure("\n".join(one_line(str(e)) for e in getattr(exc, "errors", [exc])), "user")
    except Exception as exc:
        return Failure(one_line(internal_error(exc)), "bug", traceback.format_exc())


def plain_workflow(workflow: Workflow) -> Workflow:
    """The bare Workflow under a builder Graph (or any subclass): what is sent to workers."""
    if type(workflow) is Workflow:
        return workflow
    return Workflow(**{f.name: getattr(workflow, f.name) for f in fields(Workflow)})
