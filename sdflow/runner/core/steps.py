"""The one step executor: a planned node looked up in the cache, else run (alone, or as one batch for
several runs), its outputs checked, cached, recorded in the report and told to the listeners."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from sdflow.errors import NodeError, SdflowWarning, UserError
from sdflow.graphs.model import Workflow
from sdflow.nodes.base import Absent, FileWriter, Node, RunContext
from sdflow.nodes.types import Model, SavedFiles
from sdflow.runner.core.cache import LRUCache, ModelCache
from sdflow.runner.core.events import Listener, NodeFinished, NodeStarted, NodeWarning, StepProgress
from sdflow.runner.core.plan import Step, output_name
from sdflow.runner.core.report import NodeRecord
from sdflow.runner.core.result import RunResult
from sdflow.runner.devices.accel import Acceleration
from sdflow.runner.devices.host_memory import reusing_freed_blocks


class Resources(Protocol):
    """What the executor uses of its runner, read at each step (a listener or writer swapped in
    between runs counts)."""

    device: torch.device
    outputs: LRUCache
    models: ModelCache
    listeners: list[Listener]
    write_new: FileWriter
    acceleration: Acceleration


@dataclass
class PreparedRun:
    """One run planned and ready to execute: its workflow, keyed steps, base context (with the run's
    scope), result so far and the outputs produced by node id."""

    workflow: Workflow
    plan: list[Step]
    ctx: RunContext
    result: RunResult
    produced: dict[str, dict[str, Any]] = field(default_factory=dict)


class StepExecutor:
    """Executes the steps of prepared runs, one run at a time or several runs' step as a batch."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def run(self, run: PreparedRun, started: float) -> RunResult:
        """Every step of ``run``, in plan order; the result (timed from ``started``)."""
        for step in run.plan:
            self.execute(run, step)
        return self.finish(run, started)

    def execute(self, run: PreparedRun, step: Step) -> dict[str, Any]:
        """One step of one run: from the cache, else run; its outputs, also kept in ``run.produced``."""
        cls = step.cls
        cache = self._cache(cls)
        self._emit(NodeStarted(step.id, cls.type_name))
        started = time.perf_counter()
        values = cache.get(step.key)
        status = "cached"
        if values is None:
            status = "ran"
            node = cls.model_construct(**self._arguments(run, step))
            ctx = self._context(run, step, node)
            values = self._call(step, ctx, lambda: self._store(step, node.run(ctx)))
        seconds = time.perf_counter() - started
        run.result.report.nodes.append(NodeRecord(step.id, cls.type_name, status, round(seconds, 6)))
        self._emit(NodeFinished(step.id, cls.type_name, status, seconds))
        run.produced[step.id] = values
        return values

    def execute_batch(self, runs: list[PreparedRun], steps: list[Step]) -> set[int]:
        """The same node of several runs (``steps[i]`` of ``runs[i]``): its missing distinct keys run as
        one batch when its type can (``Node.run_batch``); the indices of the runs served this way
        (none when cached, the same everywhere, not batchable, or refused), the rest for ``execute``."""
        cls, step = steps[0].cls, steps[0]
        cache = self._cache(cls)
        missing: dict[str, list[int]] = {}
        for index, item in enumerate(steps):
            if item.key not in cache:
                missing.setdefault(item.key, []).append(index)
        if len(missing) < 2 or cls.run_batch.__func__ is Node.run_batch.__func__:
            return set()
        firsts = [indices[0] for indices in missing.values()]
        nodes = [cls.model_construct(**self._arguments(runs[i], steps[i])) for i in firsts]
        self._emit(NodeStarted(step.id, cls.type_name))
        started = time.perf_counter()
        ctx = self._context(runs[0], step, nodes[0])
        outputs = self._call(step, ctx, lambda: cls.run_batch(nodes, ctx))
        if outputs is None:
            return set()
        seconds = time.perf_counter() - started
        served: set[int] = set()
        for (key, indices), values in zip(missing.items(), outputs, strict=True):
            values = self._store(replace(step, key=key), values)
            for index in indices:
                runs[index].produced[step.id] = values
                served.add(index)
        for index in sorted(served):
            record = NodeRecord(step.id, cls.type_name, "ran", round(seconds, 6), batch=len(nodes))
            runs[index].result.report.nodes.append(record)
        self._emit(NodeFinished(step.id, cls.type_name, "ran", seconds))
        return served

    def finish(self, run: PreparedRun, started: float) -> RunResult:
        """The run's result with its outputs, time since ``started`` and the files it saved."""
        result = run.result
        result.outputs = run.produced
        result.report.seconds = time.perf_counter() - started
        for node_id, values in run.produced.items():
            for files in (v for v in values.values() if isinstance(v, SavedFiles)):
                result.report.files.extend(files.paths)
                result.report.saved.setdefault(node_id, []).extend(files.paths)
        return result

    # -- the parts both ways share ---------------------------------------------------------------

    def _cache(self, cls: type[Node]) -> LRUCache | ModelCache:
        return self.resources.models if cls.cache == "model" else self.resources.outputs

    def _call(self, step: Step, ctx: RunContext, work: Callable[[], Any]) -> Any:
        """``work()`` (a node's run or run_batch) in the run's scope; a failure that is not the user's
        remembers which node raised it, for the CLI's one-line internal error."""
        device = self.resources.device
        try:
            with ctx.scope.active(), self._memory(step.cls, device):
                return work()
        except UserError:
            raise
        except Exception as exc:
            with contextlib.suppress(AttributeError, TypeError):
                exc.sdflow_node = (step.id, step.cls.type_name)  # type: ignore[attr-defined]
            raise

    @staticmethod
    def _memory(cls: type[Node], device: torch.device) -> contextlib.AbstractContextManager[Any]:
        return reusing_freed_blocks(device) if cls.repeats else contextlib.nullcontext()

    def _store(self, step: Step, values: dict[str, Any]) -> dict[str, Any]:
        """Check a node's outputs against its declared ones, accelerate loaded models, cache them."""
        cls = step.cls
        for name, kind in cls.outputs.items():
            if not isinstance(values.get(name), (kind, Absent)):
                raise TypeError(f"{cls.type_name}.run returned {type(values.get(name))} for '{name}'")
        if cls.cache == "model":
            values = self.resources.acceleration.apply(values, self.resources.device)
        self._cache(cls).put(step.key, values)
        return values

    def _arguments(self, run: PreparedRun, step: Step) -> dict[str, Any]:
        """The node's field values: its constants and the outputs linked into it."""
        arguments = dict(step.constants)
        for name, link in step.links.items():
            output = output_name(run.workflow, link)
            value = run.produced[link.node][output]
            if isinstance(value, Absent):
                where = run.workflow.nodes[step.id].location(name)
                raise NodeError(f"{link.node}.{output} is not there: {value.reason}", where)
            arguments[name] = value
        return arguments

    def _context(self, run: PreparedRun, step: Step, node: Node) -> RunContext:
        """The RunContext of one node: model-loading nodes load where the acceleration says."""
        base = run.ctx
        device = base.device
        if step.cls.cache == "model":
            device = self.resources.acceleration.load_device(device)
        return RunContext(
            device=device,
            dtype=base.dtype,
            node_id=step.id,
            output_dir=base.output_dir,
            metadata=base.metadata,
            generation=step.generation,
            on_step=self._step_reporter(step.id, node),
            locate=run.workflow.nodes[step.id].location,
            allow_pickle=base.allow_pickle,
            on_warning=self._warning_reporter(step, run),
            write_new=self.resources.write_new,
            scope=base.scope,
        )

    def _step_reporter(self, node_id: str, node: Node) -> Callable[[int, int, torch.Tensor], None] | None:
        """The node's steps as StepProgress events, with its model's family and checkpoint folder."""
        if not self.resources.listeners:
            return None
        model = next((value for value in vars(node).values() if isinstance(value, Model)), None)
        family, source = (model.family, model.source) if model is not None else (None, None)
        return lambda index, total, latent: self._emit(
            StepProgress(node_id, index, total, latent, family, source)
        )

    def _warning_reporter(self, step: Step, run: PreparedRun) -> Callable[[str], None]:
        """Warnings go into the report and to the listeners, or to Python's warnings if none listen."""

        def warn(message: str) -> None:
            run.result.report.warnings.append(message)
            if self.resources.listeners:
                self._emit(NodeWarning(step.id, step.cls.type_name, message))
            else:
                warnings.warn(message, SdflowWarning, stacklevel=3)

        return warn

    def _emit(self, event: Any) -> None:
        for listener in self.resources.listeners:
            listener(event)
