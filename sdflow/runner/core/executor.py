"""The Runner: validate, order, look up the cache, run what is missing, report."""

from __future__ import annotations

import contextlib
import functools
import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from PIL import Image as PILImage

from sdflow.errors import Location, SdflowWarning, UserError, WorkflowError, WorkflowErrors
from sdflow.files import write_new
from sdflow.graphs.model import InputRef, Link, Workflow
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps
from sdflow.interop.a1111 import Planned, generation
from sdflow.nodes import registry
from sdflow.nodes.base import FileWriter, Node, RunContext
from sdflow.nodes.fields import fields_of
from sdflow.nodes.ops.pixels import to_pil
from sdflow.nodes.types import Conditioning, Image, Latent, Mask, SavedFiles
from sdflow.runner.core.cache import LRUCache, ModelCache
from sdflow.runner.core.events import Listener, NodeFinished, NodeStarted, NodeWarning, StepProgress
from sdflow.runner.core.family_check import family_errors
from sdflow.runner.core.keys import node_key, output_key
from sdflow.runner.core.report import NodeRecord, RunReport
from sdflow.runner.devices.accel import Acceleration
from sdflow.runner.devices.device import pick_device
from sdflow.runner.devices.dtypes import SlowDtypeWarning, choose_dtype, dtype_name
from sdflow.runner.devices.host_memory import reusing_freed_blocks

GiB = 1024**3
_TENSORS: dict[type, str] = {Latent: "samples", Image: "pixels", Mask: "values", Conditioning: "embeds"}


@dataclass
class RunResult:
    """What a run produced: ``outputs[node_id][output_name]``, and the report."""

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: RunReport = field(default_factory=RunReport)

    def __getitem__(self, ref: str | object) -> Any:
        """``result["node.output"]``, or ``result["node"]`` for a node with one output; a builder
        handle (``result[decoded.image]``) works as well."""
        node, _, output = str(ref).partition(".")
        if node not in self.outputs:
            computed = ", ".join(self.outputs) or "nothing"
            raise KeyError(f"this run has no outputs of '{node}' (it computed {computed}); see run(outputs=)")
        values = self.outputs[node]
        return values[output] if output else next(iter(values.values()))

    def images(self, ref: str | object) -> list[PILImage.Image]:
        """An Image output as 8-bit RGB PIL pictures, one per batch item."""
        value = self[ref]
        if not isinstance(value, Image):
            raise TypeError(f"'{ref}' is a {type(value).__name__}, not an Image")
        return to_pil(value)

    def image(self, ref: str | object) -> PILImage.Image:
        """The first picture of an Image output: ``result.image("decoded")``."""
        return self.images(ref)[0]

    def tensor(self, ref: str | object) -> torch.Tensor:
        """The tensor an output holds: a Latent's samples, an Image's pixels, a Mask's values, a
        Conditioning's embeddings."""
        value = self[ref]
        for kind, attribute in _TENSORS.items():
            if isinstance(value, kind):
                return getattr(value, attribute)
        raise TypeError(f"'{ref}' is a {type(value).__name__}, which holds no single tensor")

    @property
    def files(self) -> list[str]:
        """Paths of the files this run wrote."""
        return self.report.files


@dataclass
class _Step:
    """One node of the plan, with its constants resolved and its key computed."""

    id: str
    cls: type[Node]
    constants: dict[str, Any]
    links: dict[str, Link]
    key: str = ""
    generation: dict[str, Any] | None = None


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
        self.acceleration = acceleration or Acceleration()
        self._environment = f"{self.device.type}/{dtype_name(self.dtype)}"
        if self.acceleration.key(self.device):
            self._environment += "/" + self.acceleration.key(self.device)

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
        values, plan, ctx_base = self._prepare(workflow, inputs, outputs, output_dir)
        result = RunResult(report=RunReport(inputs=values))
        produced: dict[str, dict[str, Any]] = {}
        for step in plan:
            produced[step.id] = self._execute(workflow, step, produced, ctx_base, result.report)
        result.outputs = produced
        result.report.seconds = time.perf_counter() - started
        for values_ in produced.values():
            for value in values_.values():
                if isinstance(value, SavedFiles):
                    result.report.files.extend(value.paths)
        return result

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
        from sdflow.runner.core.batch import run_batched

        return list(run_batched(self, workflow, list(items), batch, outputs, output_dir))

    def keys(
        self,
        workflow: Workflow,
        inputs: dict[str, Any] | None = None,
        outputs: Iterable[str] | None = None,
        output_dir: str | None = None,
    ) -> dict[str, str]:
        """The cache key of each node ``run`` would execute, by node id, without running anything."""
        _, plan, _ = self._prepare(workflow, inputs, outputs, output_dir)
        return {step.id: step.key for step in plan}

    def _prepare(
        self,
        workflow: Workflow,
        inputs: dict[str, Any] | None,
        outputs: Iterable[str] | None,
        output_dir: str | None,
    ) -> tuple[dict[str, Any], list[_Step], RunContext]:
        """Validate, resolve the inputs and plan: the input values, the keyed steps, the base context."""
        graph = validate(workflow)
        values = resolve_inputs(workflow, inputs or {})
        ctx_base = RunContext(
            device=self.device,
            dtype=self.dtype,
            output_dir=output_dir or self.output_dir,
            metadata=_metadata(workflow, values),
            allow_pickle=self.allow_pickle,
        )
        return values, self._plan(workflow, graph, values, outputs, ctx_base), ctx_base

    def _plan(
        self,
        workflow: Workflow,
        graph: nx.DiGraph,
        values: dict[str, Any],
        outputs: Iterable[str] | None,
        ctx: RunContext,
    ) -> list[_Step]:
        steps = _steps(workflow, graph, values, outputs, ctx.allow_pickle)
        planned = {s.id: Planned(s.cls.type_name, s.constants, s.links) for s in steps}
        keys: dict[str, str] = {}
        for step in steps:
            if step.cls.is_output:
                step.generation = generation(planned, step.id)
            upstream = {
                name: output_key(keys[link.node], _output_name(workflow, link))
                for name, link in step.links.items()
            }
            fingerprint = step.cls.fingerprint(step.constants, replace(ctx, generation=step.generation))
            step.key = node_key(
                step.cls.type_name,
                step.cls.version,
                step.constants,
                upstream,
                fingerprint,
                self._environment,
            )
            keys[step.id] = step.key
        return steps

    def _execute(
        self,
        workflow: Workflow,
        step: _Step,
        produced: dict[str, dict[str, Any]],
        ctx_base: RunContext,
        report: RunReport,
    ) -> dict[str, Any]:
        cls, spec = step.cls, workflow.nodes[step.id]
        cache = self.models if cls.cache == "model" else self.outputs
        self._emit(NodeStarted(step.id, cls.type_name))
        started = time.perf_counter()
        values = cache.get(step.key)
        status = "cached"
        if values is None:
            status = "ran"
            node = cls.model_construct(**self._arguments(workflow, step, produced))
            try:
                with reusing_freed_blocks(self.device) if cls.repeats else contextlib.nullcontext():
                    values = node.run(self._context(step, spec, ctx_base, report))
                _check_outputs(cls, values)
            except UserError:
                raise
            except Exception as exc:
                _tag_node(exc, step.id, cls.type_name)
                raise
            if cls.cache == "model":
                values = self.acceleration.apply(values, self.device)
            cache.put(step.key, values)
        seconds = time.perf_counter() - started
        report.nodes.append(NodeRecord(step.id, cls.type_name, status, round(seconds, 6)))
        self._emit(NodeFinished(step.id, cls.type_name, status, seconds))
        return values

    def _arguments(
        self, workflow: Workflow, step: _Step, produced: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        """The node's field values: its constants and the outputs linked into it."""
        arguments = dict(step.constants)
        for name, link in step.links.items():
            arguments[name] = produced[link.node][_output_name(workflow, link)]
        return arguments

    def _context(self, step: _Step, spec: Any, ctx_base: RunContext, report: RunReport) -> RunContext:
        """The RunContext of one node: model-loading nodes load where the acceleration says."""
        device = ctx_base.device
        if step.cls.cache == "model":
            device = self.acceleration.load_device(device)
        return RunContext(
            device=device,
            dtype=ctx_base.dtype,
            node_id=step.id,
            output_dir=ctx_base.output_dir,
            metadata=ctx_base.metadata,
            generation=step.generation,
            on_step=self._step_reporter(step.id),
            locate=spec.location,
            allow_pickle=ctx_base.allow_pickle,
            on_warning=self._warning_reporter(step.id, step.cls.type_name, report),
            write_new=self.write_new,
        )

    def _step_reporter(self, node_id: str):
        if not self.listeners:
            return None
        return lambda index, total, latent: self._emit(StepProgress(node_id, index, total, latent))

    def _warning_reporter(self, node_id: str, type_name: str, report: RunReport):
        """Warnings go into the report and to the listeners, or to Python's warnings if none listen."""

        def warn(message: str) -> None:
            report.warnings.append(message)
            if self.listeners:
                self._emit(NodeWarning(node_id, type_name, message))
            else:
                warnings.warn(message, SdflowWarning, stacklevel=3)

        return warn

    def _emit(self, event: Any) -> None:
        for listener in self.listeners:
            listener(event)


def resolve_inputs(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``given``; unknown names, missing required ones and wrong types fail."""
    errors: list[UserError] = []
    where = Location(workflow.file)
    for name in given:
        if name not in workflow.inputs:
            more = registry.suggestion(
                name, workflow.inputs, f" (inputs: {', '.join(workflow.inputs) or 'none'})"
            )
            errors.append(WorkflowError(f"unknown workflow input '{name}'{more}", where))
    values = {}
    for name, spec in workflow.inputs.items():
        loc = spec.loc or where
        if name in given:
            try:
                values[name] = spec.check(given[name])
            except ValueError as exc:
                errors.append(WorkflowError(str(exc), loc))
        elif spec.required:
            errors.append(WorkflowError(f"input '{name}' has no default: set it (--set {name}=...)", loc))
        else:
            values[name] = spec.default
    if errors:
        raise WorkflowErrors(errors)
    return values


def check(
    workflow: Workflow,
    inputs: dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Everything ``Runner.run`` checks before running a node (graph, input values, constants, and
    prechecks such as a missing checkpoint), without a runner; returns the input values."""
    graph = validate(workflow)
    values = resolve_inputs(workflow, inputs or {})
    _steps(workflow, graph, values, outputs, allow_pickle)
    return values


def _steps(
    workflow: Workflow,
    graph: nx.DiGraph,
    values: dict[str, Any],
    outputs: Iterable[str] | None,
    allow_pickle: bool = False,
) -> list[_Step]:
    """The nodes ``outputs`` need, in order, with constants resolved and checked (not yet keyed), and
    the model families along their links where known without loading (``family_check``).
    ``allow_pickle`` (the runner-wide opt-in) sets every ``allow_pickle`` field to True."""
    targets = _targets(workflow, graph, outputs)
    needed = set(targets)
    for target in targets:
        needed |= nx.ancestors(graph, target)
    order = list(nx.lexicographical_topological_sort(graph.subgraph(needed)))
    steps, errors = [], []
    for node_id in order:
        spec = workflow.nodes[node_id]
        cls = registry.get(spec.type)
        constants, links, sources = {}, {}, {}
        for name, value in spec.fields.items():
            if isinstance(value, Link):
                links[name] = value
                continue
            if isinstance(value, InputRef):
                sources[name] = value.name
            constants[name] = values[value.name] if isinstance(value, InputRef) else value
        constants = _absolute_paths(cls, {**_defaults(cls), **constants}, workflow)
        if allow_pickle and "allow_pickle" in constants:
            constants["allow_pickle"] = True
        errors += _check_constants(cls, constants, sources, spec.location)
        steps.append(_Step(node_id, cls, constants, links))
    errors = errors or family_errors(workflow, steps, functools.partial(_output_name, workflow))
    if errors:
        raise WorkflowErrors(errors)
    return steps


def _targets(workflow: Workflow, graph: nx.DiGraph, outputs: Iterable[str] | None) -> list[str]:
    if outputs is not None:
        targets = [o.partition(".")[0] for o in outputs]
        for target in targets:
            if target not in workflow.nodes:
                more = registry.suggestion(target, workflow.nodes)
                raise WorkflowError(f"no node '{target}' to compute{more}", Location(workflow.file))
        return targets
    marked = [n for n, s in workflow.nodes.items() if registry.get(s.type).is_output]
    return marked or [n for n in graph if graph.out_degree(n) == 0]


def _defaults(cls: type[Node]) -> dict[str, Any]:
    return {n: f.default for n, f in fields_of(cls).items() if not f.required and not f.is_port}


def _absolute_paths(cls: type[Node], constants: dict[str, Any], workflow: Workflow) -> dict[str, Any]:
    """The node's file-path constants made absolute against the workflow file's folder (or cwd)."""
    if not cls.path_fields:
        return constants
    base = workflow.path_base()
    resolved = dict(constants)
    for name in cls.path_fields:
        if isinstance(resolved.get(name), str) and resolved[name]:
            path = base / Path(resolved[name]).expanduser()
            if name not in cls.folder_kinds or path.exists():
                resolved[name] = str(path)
    return resolved


def _check_constants(
    cls: type[Node], constants: dict[str, Any], sources: dict[str, str], locate
) -> list[UserError]:
    """Constants after workflow inputs are substituted: field types and ranges, then precheck.
    ``sources`` names the workflow input each substituted field came from, for the message."""
    errors: list[UserError] = []
    fields = fields_of(cls)
    for name, value in constants.items():
        if fields[name].is_port:
            continue
        try:
            fields[name].validate(value)
        except ValueError as exc:
            origin = f" from input '{sources[name]}'" if name in sources else ""
            errors.append(WorkflowError(f"{exc} (got {value!r}{origin})", locate(name)))
    if not errors:
        errors += [WorkflowError(msg, locate(name)) for name, msg in cls.precheck(constants)]
    return errors


def _output_name(workflow: Workflow, link: Link) -> str:
    if link.output is not None:
        return link.output
    return next(iter(registry.get(workflow.nodes[link.node].type).outputs))


def _tag_node(exc: Exception, node_id: str, type_name: str) -> None:
    """Remember on a failure which node raised it, for the CLI's one-line internal error."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.sdflow_node = (node_id, type_name)  # type: ignore[attr-defined]


def _check_outputs(cls: type[Node], values: dict[str, Any]) -> None:
    for name, kind in cls.outputs.items():
        if not isinstance(values.get(name), kind):
            raise TypeError(f"{cls.type_name}.run returned {type(values.get(name))} for '{name}'")


def _metadata(workflow: Workflow, values: dict[str, Any]) -> dict[str, str]:
    """Text chunks for saved images: the workflow and the inputs of this run."""
    return {
        "sdflow:workflow": workflow.source if workflow.source is not None else _yaml_of(workflow),
        "sdflow:inputs": json.dumps(values, sort_keys=True),
        "sdflow:base": str(workflow.path_base().resolve()),
    }


_YAML: OrderedDict[str, str] = OrderedDict()  # a graph built or changed in Python, dumped once


def _yaml_of(workflow: Workflow) -> str:
    """``dumps(workflow)``, remembered for the last few graphs: a pure-Python YAML dump costs ~10 ms,
    which every re-run of an unchanged Python-built graph would pay again."""
    key = repr((workflow.file, workflow.structure()))
    if key not in _YAML:
        _YAML[key] = dumps(workflow)
        if len(_YAML) > 16:
            _YAML.popitem(last=False)
    return _YAML[key]
