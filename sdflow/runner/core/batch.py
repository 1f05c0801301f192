"""Batched sweeps: runs of one workflow that differ only in values such as the seed or the prompt
go through the batchable nodes (DenoiseLoop, VAEDecode) as one batch.

The runs of a group advance through the plan together. A node whose key is the same in every run
runs once (the others find it in the cache); a node whose keys differ runs as one batch when its
type can (``Node.run_batch``: each item keeps its own generator, so every result equals the one
its own run gives) and otherwise once per run, in run order, so files get the names a serial
sweep gives them. Each run gets its own RunResult and report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sdflow.runner.core.result import RunResult
from sdflow.runner.core.steps import PreparedRun, StepExecutor


def groups(items: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    """(index of the first, the items) of consecutive groups of up to ``size`` items."""
    if size < 1:
        raise ValueError(f"batch must be at least 1 (got {size})")
    for first in range(0, len(items), size):
        yield first, items[first : first + size]


def run_group(executor: StepExecutor, runs: list[PreparedRun], started: float) -> list[RunResult]:
    """Prepared runs of one workflow, advanced through the plan together: a step batched where it
    can be, else executed run by run; the results in order (timed from ``started``)."""
    for position in range(len(runs[0].plan)):
        steps = [run.plan[position] for run in runs]
        assert len({step.id for step in steps}) == 1, "one workflow plans its nodes in one order"
        served = executor.execute_batch(runs, steps)
        for index, (run, step) in enumerate(zip(runs, steps, strict=True)):
            if index not in served:
                executor.execute(run, step)
    return [executor.finish(run, started) for run in runs]
