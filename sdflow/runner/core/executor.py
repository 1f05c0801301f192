"""The Runner: validate, plan, look up the cache, run what is missing, report; one run at a time or
several as batches (``run_batch``), both through the one step executor (``steps.py``)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sdflow.files import write_new
from sdflow.graphs.model import Workflow
from sdflow.graphs.validate import validate
from sdflow.models.access import Sandbox
from sdflow.nodes.base import FileWriter, RunContext
from sdflow.nodes.scope import RunScope
from sdflow.runner.core.batch import groups, run_group
from sdflow.runner.core.cache import LRUCache, ModelCache
from sdflow.runner.core.events import Listener
from sdflow.runner.core.metadata import text_chunks
from sdflow.runner.core.plan import CheckedPlan, key_steps, plan_steps, resolve_inputs
from sdflow.runner.core.report import RunReport
from sdflow.runner.core.result import RunResult
from sdflow.runner.core.steps import PreparedRun, StepExecutor
from sdflow.runner.devices.accel import Acceleration
from sdflow.runner.devices.device import pick_device
from sdflow.runner.devices.dtypes import SlowDtypeWarning, choose_dtype, dtype_name

GiB = 1024**3


class Runner:
    """Runs workflows, keeping node outputs and models cached between runs."""

    def __init__(
        self,
        device: str = "auto",
        dtype: str | None = "auto",
        output_dir: str = "outputs",
        output_cache_bytes: int = 4 * GiB,
        model_cache_bytes: int = 16 * GiB,
        listeners: Iterable[Listener] = (),
        allow_pickle: bool = False,
        acceleration: Acceleration | None = None,
    ) -> None:
        self.allow_pickle = allow_pickle  # sets every node's `allow_pickle` field (pickle weight files)
        self.device = pick_device(device)
        choice = choose_dtype(self.device, dtype)
        if choice.warning:  # before anything heavy runs: a slow dtype can cost 40x
            warnings.warn(choice.warning, SlowDtypeWarning, stacklevel=2)
        self.dtype, self.dtype_reason = choice.dtype, choice.reason
        self.output_dir = output_dir
        self.outputs = LRUCache(output_cache_bytes)
        self.models = ModelCache(model_cache_bytes, self.device)
        self.listeners: list[Listener] = list(listeners)
        self.write_new: FileWriter = write_new  # how output nodes write new files (see RunContext)
        self.sandbox: Sandbox | None = None  # the folders runs may read files from (None: any)
        self.acceleration = acceleration or Acceleration()
        # what cache keys add to a node's own inputs: where and how it runs
        self.environment = f"{self.device.type}/{dtype_name(self.dtype)}"
        if self.acceleration.key(self.device):
            self.environment += "/" + self.acceleration.key(self.device)
        self.steps = StepExecutor(self)

    def subscribe(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def clear(self) -> None:
        """Empty both caches (frees the memory they held)."""
        self.outputs.clear()
        self.models.clear()

    # -- running --------------------------------------------------------------------------------

    def run(
        self,
        workflow: Workflow,
        inputs: dict[str, Any] | None = None,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
    ) -> RunResult:
        """Run what ``outputs`` (node ids; default: the output nodes) need, reusing the caches."""
        started = time.perf_counter()
        return self.steps.run(self.prepare(workflow, inputs, outputs, output_dir), started)

    def run_checked(self, plan: CheckedPlan, output_dir: str | None = None) -> RunResult:
        """Run a plan ``sdflow.runner.core.plan.checked`` made (with this runner's ``allow_pickle`` and
        ``sandbox``) without validating and planning it again; each plan runs once."""
        started = time.perf_counter()
        prepared = self.prepare(plan.workflow, plan.values, output_dir=output_dir, plan=plan)
        return self.steps.run(prepared, started)

    def run_batch(
        self,
        workflow: Workflow,
        items: Iterable[dict[str, Any]],
        batch: int = 4,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
    ) -> list[RunResult]:
        """``run`` once per input dict of ``items``, in order, with up to ``batch`` consecutive runs
        sharing one pass through the nodes that batch (DenoiseLoop, VAEDecode) when they differ only
        in seed or prompt: the same images and files as running them one by one, faster on a GPU."""
        return list(self.run_batches(workflow, list(items), batch, outputs, output_dir))

    def run_batches(
        self,
        workflow: Workflow,
        items: list[dict[str, Any]],
        batch: int,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
        announce: Callable[[int, int], None] | None = None,
    ) -> Iterator[RunResult]:
        """``run_batch``'s results one by one as each group finishes; ``announce(first, count)``
        before each group."""
        targets = None if outputs is None else list(outputs)
        for first, group in groups(items, batch):
            if announce is not None:
                announce(first, len(group))
            started = time.perf_counter()
            runs = [self.prepare(workflow, inputs, targets, output_dir) for inputs in group]
            yield from run_group(self.steps, runs, started)

    def keys(
        self,
        workflow: Workflow,
        inputs: dict[str, Any] | None = None,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
    ) -> dict[str, str]:
        """The cache key of each node ``run`` would execute, by node id, without running anything."""
        prepared = self.prepare(workflow, inputs, outputs, output_dir)
        return {step.id: step.key for step in prepared.plan}

    def prepare(
        self,
        workflow: Workflow,
        inputs: dict[str, Any] | None = None,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
        plan: CheckedPlan | None = None,
    ) -> PreparedRun:
        """Validate, resolve the inputs, plan and key the steps, in a new scope: the run, ready (a
        checked ``plan`` is only keyed)."""
        graph = validate(workflow) if plan is None else None
        values = plan.values if plan is not None else resolve_inputs(workflow, inputs or {})
        ctx = RunContext(
            device=self.device,
            dtype=self.dtype,
            output_dir=output_dir or self.output_dir,
            metadata=text_chunks(workflow, values),
            allow_pickle=self.allow_pickle,
            scope=RunScope(sandbox=self.sandbox),
        )
        if graph is None:
            steps = plan.steps
        else:
            steps = plan_steps(workflow, graph, values, outputs, ctx.scope, self.allow_pickle)
        key_steps(workflow, steps, ctx, self.environment)
        return PreparedRun(workflow, steps, ctx, RunResult(report=RunReport(inputs=values)))
