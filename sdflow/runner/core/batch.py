"""Batched sweeps: runs of one workflow that differ only in values such as the seed or the prompt
go through the batchable nodes (DenoiseLoop, VAEDecode) as one batch.

The runs of a group advance through the plan together. A node whose key is the same in every run
runs once (the others find it in the cache); a node whose keys differ runs as one batch when its
type can (``Node.run_batch``: each item keeps its own generator, so every result equals the one
its own run gives) and otherwise once per run, in run order, so files get the names a serial
sweep gives them. Each run gets its own RunResult and report.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sdflow.errors import UserError
from sdflow.graphs.model import Workflow
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import SavedFiles
from sdflow.runner.core.events import NodeFinished, NodeStarted
from sdflow.runner.core.executor import Runner, RunResult, _check_outputs, _Step, _tag_node
from sdflow.runner.core.report import NodeRecord, RunReport
from sdflow.runner.devices.host_memory import reusing_freed_blocks


def run_batched(
    runner: Runner,
    workflow: Workflow,
    items: list[dict[str, Any]],
    batch: int,
    outputs: Iterable[str] | None = None,
    output_dir: str | None = None,
    announce: Callable[[int, int], None] | None = None,
) -> Iterator[RunResult]:
    """The results of running ``workflow`` with each of ``items`` (input values), in order, groups of
    up to ``batch`` consecutive items sharing batched nodes; ``announce(first, count)`` per group."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    targets = None if outputs is None else list(outputs)
    for first in range(0, len(items), batch):
        group = items[first : first + batch]
        if announce is not None:
            announce(first, len(group))
        yield from _run_group(runner, workflow, group, targets, output_dir)


def _run_group(
    runner: Runner,
    workflow: Workflow,
    group: list[dict[str, Any]],
    outputs: list[str] | None,
    output_dir: str | None,
) -> list[RunResult]:
    started = time.perf_counter()
    prepared = [runner._prepare(workflow, inputs, outputs, output_dir) for inputs in group]
    results = [RunResult(report=RunReport(inputs=values)) for values, _, _ in prepared]
    produced: list[dict[str, dict[str, Any]]] = [{} for _ in group]
    plans = [plan for _, plan, _ in prepared]
    contexts = [ctx for _, _, ctx in prepared]
    for position in range(len(plans[0])):
        steps = [plan[position] for plan in plans]
        assert len({step.id for step in steps}) == 1, "one workflow plans its nodes in one order"
        batched = _try_batch(runner, workflow, steps, produced, contexts[0], results)
        for index, step in enumerate(steps):
            if index in batched:
                produced[index][step.id] = batched[index]
            else:
                report = results[index].report
                produced[index][step.id] = runner._execute(
                    workflow, step, produced[index], contexts[index], report
                )
    for result, values in zip(results, produced, strict=True):
        result.outputs = values
        result.report.seconds = time.perf_counter() - started
        saved = [v for node in values.values() for v in node.values() if isinstance(v, SavedFiles)]
        result.report.files = [path for files in saved for path in files.paths]
    return results


def _try_batch(
    runner: Runner,
    workflow: Workflow,
    steps: list[_Step],
    produced: list[dict[str, dict[str, Any]]],
    ctx_base: RunContext,
    results: list[RunResult],
) -> dict[int, dict[str, Any]]:
    """Run the missing distinct keys of one node as a batch: the outputs by item index ({} when the
    node is cached, the same everywhere, not batchable, or refuses this batch)."""
    cls = steps[0].cls
    cache = runner.models if cls.cache == "model" else runner.outputs
    missing: dict[str, list[int]] = {}
    for index, step in enumerate(steps):
        if step.key not in cache:
            missing.setdefault(step.key, []).append(index)
    if len(missing) < 2 or cls.run_batch.__func__ is Node.run_batch.__func__:
        return {}
    firsts = [indices[0] for indices in missing.values()]
    nodes = [cls.model_construct(**runner._arguments(workflow, steps[i], produced[i])) for i in firsts]
    step = steps[0]
    runner._emit(NodeStarted(step.id, cls.type_name))
    started = time.perf_counter()
    ctx = runner._context(step, workflow.nodes[step.id], ctx_base, results[0].report)
    try:
        with reusing_freed_blocks(runner.device) if cls.repeats else contextlib.nullcontext():
            outputs = cls.run_batch(nodes, ctx)
    except UserError:
        raise
    except Exception as exc:
        _tag_node(exc, step.id, cls.type_name)
        raise
    if outputs is None:
        return {}
    seconds = time.perf_counter() - started
    batched: dict[int, dict[str, Any]] = {}
    for (key, indices), values in zip(missing.items(), outputs, strict=True):
        _check_outputs(cls, values)
        cache.put(key, values)
        for index in indices:
            batched[index] = values
    for index in batched:
        record = NodeRecord(step.id, cls.type_name, "ran", round(seconds, 6), batch=len(nodes))
        results[index].report.nodes.append(record)
    runner._emit(NodeFinished(step.id, cls.type_name, "ran", seconds))
    return batched
