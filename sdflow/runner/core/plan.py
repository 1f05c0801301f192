"""Planning a run: the input values, the nodes the outputs need in order, their constants resolved
and checked, and each one's cache key."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import networkx as nx

from sdflow.errors import Location, UserError, WorkflowError, WorkflowErrors, suggestion
from sdflow.graphs.model import InputRef, Link, Workflow
from sdflow.graphs.validate import validate
from sdflow.models.access import Sandbox
from sdflow.nodes import registry
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import fields_of
from sdflow.nodes.scope import RunScope
from sdflow.runner.core.family_check import family_errors
from sdflow.runner.core.keys import node_key, output_key
from sdflow.runner.core.metadata import generation_settings


@dataclass
class Step:
    """One node of the plan, with its constants resolved and its key computed."""

    id: str
    cls: type[Node]
    constants: dict[str, Any]
    links: dict[str, Link]
    key: str = ""
    generation: dict[str, Any] | None = None


def resolve_inputs(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with ``given``; unknown names, missing required ones and wrong types fail."""
    errors: list[UserError] = []
    where = Location(workflow.file)
    for name in given:
        if name not in workflow.inputs:
            more = suggestion(name, workflow.inputs, f" (inputs: {', '.join(workflow.inputs) or 'none'})")
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


@dataclass
class CheckedPlan:
    """A workflow ``checked`` accepted, with what it planned: ``Runner.run_checked`` runs it without
    validating and planning again (the server checks a job when it arrives and runs it later)."""

    workflow: Workflow
    values: dict[str, Any]
    steps: list[Step]


def check(
    workflow: Workflow,
    inputs: dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    allow_pickle: bool = False,
    sandbox: Sandbox | None = None,
) -> dict[str, Any]:
    """Everything ``Runner.run`` checks before running a node (graph, input values, constants, and
    prechecks such as a missing checkpoint), without a runner; returns the input values. ``sandbox``
    restricts the files it may name (a server's API job)."""
    return checked(workflow, inputs, outputs, allow_pickle, sandbox).values


@dataclass(frozen=True)
class Shape:
    """What checking a workflow finds before its input values matter: the validated graph and the
    nodes the outputs need, in run order. It depends on the workflow alone (not its inputs, nor any
    file), so a server keeps it for a workflow text it is sent again (``shape_of``; never mutated)."""

    graph: nx.DiGraph
    order: tuple[str, ...]


def shape_of(workflow: Workflow, outputs: Iterable[str] | None = None) -> Shape:
    """The workflow validated (WorkflowErrors listing every problem) and its run order for ``outputs``."""
    graph = validate(workflow)
    return Shape(graph, tuple(_order(workflow, graph, outputs)))


def checked(
    workflow: Workflow,
    inputs: dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    allow_pickle: bool = False,
    sandbox: Sandbox | None = None,
    shape: Shape | None = None,
) -> CheckedPlan:
    """``check``, keeping the plan for a runner with the same ``allow_pickle`` and ``sandbox``;
    ``shape``: the workflow's ``shape_of(workflow, outputs)`` if known (else found here)."""
    shape = shape or shape_of(workflow, outputs)
    values = resolve_inputs(workflow, inputs or {})
    scope = RunScope(sandbox=sandbox)
    steps = plan_steps(workflow, shape.graph, values, outputs, scope, allow_pickle, shape.order)
    return CheckedPlan(workflow, values, steps)


def plan_steps(
    workflow: Workflow,
    graph: nx.DiGraph,
    values: dict[str, Any],
    outputs: Iterable[str] | None,
    scope: RunScope,
    allow_pickle: bool = False,
    order: Iterable[str] | None = None,
) -> list[Step]:
    """The nodes ``outputs`` need, in order, with constants resolved and checked (not yet keyed), and
    the model families along their links where known without loading (``family_check``); the
    prechecks share ``scope``. ``allow_pickle`` (the runner-wide opt-in) sets every ``allow_pickle``
    field to True. ``order``: the run order if known (``Shape.order``)."""
    order = _order(workflow, graph, outputs) if order is None else order
    steps, errors = [], []
    with scope.active():
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
            refusals = _sandbox_errors(cls, constants, spec.location, scope)
            errors += refusals or _check_constants(cls, constants, sources, spec.location, scope)
            steps.append(Step(node_id, cls, constants, links))
        errors = errors or family_errors(workflow, steps, functools.partial(output_name, workflow))
    if errors:
        raise WorkflowErrors(errors)
    return steps


def key_steps(workflow: Workflow, steps: list[Step], ctx: RunContext, environment: str) -> None:
    """Set each step's cache key (type, version, constants, upstream keys, fingerprint, environment)
    and each output node's generation settings; fingerprints see ``ctx`` (and its scope)."""
    settings = generation_settings(steps)
    keys: dict[str, str] = {}
    with ctx.scope.active():
        for step in steps:
            step.generation = settings.get(step.id)
            upstream = {
                name: output_key(keys[link.node], output_name(workflow, link))
                for name, link in step.links.items()
            }
            fingerprint = step.cls.fingerprint(step.constants, replace(ctx, generation=step.generation))
            step.key = node_key(
                step.cls.type_name, step.cls.version, step.constants, upstream, fingerprint, environment
            )
            keys[step.id] = step.key


def output_name(workflow: Workflow, link: Link) -> str:
    """The output a link reads: the one it names, else its node's first."""
    if link.output is not None:
        return link.output
    return next(iter(registry.get(workflow.nodes[link.node].type).outputs))


def _order(workflow: Workflow, graph: nx.DiGraph, outputs: Iterable[str] | None) -> list[str]:
    """The nodes ``outputs`` need (the output nodes when None), upstream first."""
    targets = _targets(workflow, graph, outputs)
    needed = set(targets)
    for target in targets:
        needed |= nx.ancestors(graph, target)
    return list(nx.lexicographical_topological_sort(graph.subgraph(needed)))


def _targets(workflow: Workflow, graph: nx.DiGraph, outputs: Iterable[str] | None) -> list[str]:
    if outputs is not None:
        targets = [o.partition(".")[0] for o in outputs]
        for target in targets:
            if target not in workflow.nodes:
                more = suggestion(target, workflow.nodes)
                raise WorkflowError(f"no node '{target}' to compute{more}", Location(workflow.file))
        return targets
    marked = [n for n, s in workflow.nodes.items() if registry.get(s.type).is_output]
    return marked or [n for n in graph if graph.out_degree(n) == 0]


@functools.cache
def _defaults(cls: type[Node]) -> dict[str, Any]:
    """The node type's constant fields' defaults (shared: copy before changing)."""
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


def _sandbox_errors(cls: type[Node], constants: dict[str, Any], locate, scope: RunScope) -> list[UserError]:
    """A restricted run's refusals (``scope.sandbox``): path fields outside its folders, and a node's
    own ``allow_pickle`` opt-in where the sandbox keeps that to the server."""
    sandbox = scope.sandbox
    if sandbox is None:
        return []
    errors: list[UserError] = []
    for name in cls.path_fields:
        value = constants.get(name)
        problem = sandbox.refusal(value) if isinstance(value, str) and value else None
        if problem:
            errors.append(WorkflowError(problem, locate(name)))
    if constants.get("allow_pickle") is True and not sandbox.node_pickle:
        message = "allow_pickle cannot be set by this server's jobs (the server's --allow-pickle decides)"
        errors.append(WorkflowError(message, locate("allow_pickle")))
    return errors


def _check_constants(
    cls: type[Node], constants: dict[str, Any], sources: dict[str, str], locate, scope: RunScope
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
        errors += [WorkflowError(msg, locate(name)) for name, msg in cls.precheck(constants, scope)]
    return errors
