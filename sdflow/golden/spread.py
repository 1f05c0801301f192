"""`sdflow golden check --workers N`: golden checks spread over Ray workers.

Workers run each workflow up to its recorded images and send the float arrays back; the driver
compares them with the goldens and writes any failure artifacts, in the order the workflows were
given, exactly as a serial check does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sdflow.golden.capture import image_refs, run_images
from sdflow.golden.compare import Thresholds
from sdflow.golden.harness import CheckResult, golden_inputs, judge, runner_environment
from sdflow.golden.store import Golden
from sdflow.graphs.model import Workflow
from sdflow.runner.scale.jobs import Failure, Job, plain_workflow


@dataclass(frozen=True)
class Captured:
    """A worker's images for one golden check, and the environment that made them."""

    images: dict[str, np.ndarray]
    environment: dict[str, Any]


def capture(runner: Any, job: Job) -> Captured:
    """The worker's task: run the job's workflow up to the images its golden records."""
    return Captured(run_images(runner, job.workflow, job.inputs), runner_environment(runner))


def check_on_workers(
    workflows: Sequence[tuple[Workflow, dict[str, Any]]],
    goldens: Sequence[Golden],
    backend: Any,
    thresholds: Thresholds,
    artifacts_dir: Path | None = None,
) -> Iterator[CheckResult | Failure]:
    """Check each (workflow, inputs) against its golden on ``backend``; results in the given order."""
    from sdflow.runner.scale.many import in_job_order

    jobs = []
    for (workflow, inputs), golden in zip(workflows, goldens, strict=True):
        nodes = tuple(dict.fromkeys(ref.partition(".")[0] for ref in image_refs(workflow)))
        jobs.append(Job(plain_workflow(workflow), golden_inputs(golden, inputs), nodes))
    completions = backend.map(capture, jobs)
    try:
        for done in in_job_order(completions):
            value, golden = done.value, goldens[done.index]
            if isinstance(value, Failure):
                yield value
            else:
                workflow = workflows[done.index][0]
                yield judge(workflow, golden, value.images, value.environment, thresholds, artifacts_dir)
    finally:
        completions.close()
