"""Checking a workflow completely before anything runs, and building its networkx graph."""

from __future__ import annotations

from typing import Any

import networkx as nx

from sdflow.errors import UserError, WorkflowError, WorkflowErrors, suggestion
from sdflow.graphs.model import INPUT_TYPES, InputRef, Link, NodeSpec, Workflow
from sdflow.nodes import registry
from sdflow.nodes.base import Node
from sdflow.nodes.fields import FieldSpec, fields_of, literal_choices, type_label


def validate(workflow: Workflow) -> nx.DiGraph:
    """The workflow's DiGraph (edges upstream -> downstream); WorkflowErrors listing every problem."""
    errors = _Checker(workflow).check()
    graph = build_graph(workflow)
    if not errors:
        errors.extend(_cycle_errors(workflow, graph))
    if errors:
        errors.sort(key=lambda e: (e.location.line or 0, e.location.col or 0))
        raise WorkflowErrors(errors)
    return graph


def check_node(workflow: Workflow, spec: NodeSpec) -> list[UserError]:
    """Every problem of one node against its workflow (type, fields, links, inputs); the Python
    builder calls this as each node is added, so both front ends report mistakes alike."""
    checker = _Checker(workflow)
    checker.check_spec(spec)
    return checker.errors


def build_graph(workflow: Workflow) -> nx.DiGraph:
    """Nodes are node ids; an edge u -> v carries the fields of v that u's outputs feed."""
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for spec in workflow.nodes.values():
        for field_name, link in spec.links().items():
            if link.node in workflow.nodes:
                graph.add_edge(link.node, spec.id)
                graph.edges[link.node, spec.id].setdefault("fields", []).append(field_name)
    return graph


def output_type(workflow: Workflow, link: Link) -> type | None:
    """The type a (valid) link carries."""
    cls = registry.get(workflow.nodes[link.node].type)
    if cls is None:
        return None
    name = link.output if link.output is not None else next(iter(cls.outputs), None)
    return cls.outputs.get(name) if name else None


class _Checker:
    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.errors: list[UserError] = []

    def error(self, spec: NodeSpec, field: str | None, message: str) -> None:
        self.errors.append(WorkflowError(message, spec.location(field)))

    def check(self) -> list[UserError]:
        for spec in self.workflow.nodes.values():
            self.check_spec(spec)
        return self.errors

    def check_spec(self, spec: NodeSpec) -> None:
        cls = registry.get(spec.type)
        if cls is None:
            more = suggestion(spec.type, registry.all_types(), " (see `sdflow nodes`)")
            self.error(spec, "type", f"unknown node type '{spec.type}'{more}")
            return
        self.check_node(spec, cls)

    def check_node(self, spec: NodeSpec, cls: type[Node]) -> None:
        fields = fields_of(cls)
        for name, value in spec.fields.items():
            if name not in fields:
                more = suggestion(name, fields, f" (fields: {', '.join(fields)})")
                self.error(spec, name, f"{spec.type} has no field '{name}'{more}")
            elif isinstance(value, Link):
                self.check_link(spec, fields[name], value)
            elif isinstance(value, InputRef):
                self.check_input(spec, fields[name], value)
            else:
                self.check_constant(spec, fields[name], value)
        for name, field in fields.items():
            if field.required and name not in spec.fields:
                what = "a link to a " + type_label(field.annotation) if field.is_port else "a value"
                self.error(spec, name, f"{spec.type} needs field '{name}' ({what})")

    @staticmethod
    def link_syntax(spec: NodeSpec, field_name: str, node: str, output: str) -> str:
        """How to write a link where ``spec`` was written: a YAML file, or a Python builder call."""
        if (spec.location().file or "").endswith(".py"):
            return f"{field_name}=<{node.lower()} handle>.{output}"
        return f"`{field_name}: !link {node}.{output}`"

    def check_constant(self, spec: NodeSpec, field: FieldSpec, value: Any) -> None:
        if field.is_port:
            if value is None and field.optional:
                return
            self.error(
                spec,
                field.name,
                f"'{field.name}' takes a link to a {type_label(field.annotation)} output "
                f"(write {self.link_syntax(spec, field.name, 'NODE', 'OUTPUT')}), not the constant {value!r}",
            )
            return
        try:
            field.validate(value)
        except ValueError as exc:
            if literal_choices(field.annotation):  # the message already lists the choices
                self.error(spec, field.name, str(exc))
                return
            self.error(spec, field.name, f"{exc} (expected {_expected(field)}, got {value!r})")

    def check_link(self, spec: NodeSpec, field: FieldSpec, link: Link) -> None:
        source = self.workflow.nodes.get(link.node)
        if source is None:
            more = suggestion(link.node, self.workflow.nodes)
            self.error(spec, field.name, f"link to missing node '{link.node}'{more}")
            return
        cls = registry.get(source.type)
        if cls is None:
            return  # reported at the source node
        outputs = cls.outputs
        if link.output is None and len(outputs) != 1:
            self.error(
                spec,
                field.name,
                f"'{link.node}' ({source.type}) has outputs {', '.join(outputs)}: name one, "
                f"e.g. {self.link_syntax(spec, field.name, link.node, next(iter(outputs), 'OUTPUT'))}",
            )
            return
        name = link.output if link.output is not None else next(iter(outputs))
        if name not in outputs:
            more = suggestion(name, outputs, f" (outputs: {', '.join(outputs)})")
            self.error(spec, field.name, f"{source.type} '{link.node}' has no output '{name}'{more}")
            return
        carried = outputs[name]
        if not field.accepts(carried):
            self.error(
                spec,
                field.name,
                f"link type mismatch: {link.node}.{name} is {carried.__name__}, "
                f"but {spec.type}.{field.name} expects {type_label(field.annotation)}",
            )

    def check_input(self, spec: NodeSpec, field: FieldSpec, ref: InputRef) -> None:
        declared = self.workflow.inputs.get(ref.name)
        if declared is None:
            more = suggestion(ref.name, self.workflow.inputs, " (declare it under 'inputs:')")
            self.error(spec, field.name, f"unknown workflow input '{ref.name}'{more}")
            return
        if field.is_port:
            self.error(spec, field.name, f"'{field.name}' takes a link, not a workflow input")
            return
        kinds = INPUT_TYPES[declared.type]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not any(field.accepts(k) for k in kinds) and not (declared.type == "int" and field.accepts(float)):
            self.error(
                spec,
                field.name,
                f"input '{ref.name}' is a {declared.type}, but {spec.type}.{field.name} "
                f"expects {type_label(field.annotation)}",
            )
            return
        if not declared.required:
            try:
                field.validate(declared.default)
            except ValueError as exc:
                expected = "" if literal_choices(field.annotation) else f" (expected {_expected(field)})"
                self.error(spec, field.name, f"default of input '{ref.name}' does not fit: {exc}{expected}")


def _expected(field: FieldSpec) -> str:
    label = type_label(field.annotation)
    limits = field.constraints()
    return f"{label}, {limits}" if limits and not label.startswith("'") else label


def _cycle_errors(workflow: Workflow, graph: nx.DiGraph) -> list[UserError]:
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return []
    ids = [u for u, _ in cycle]
    path = " -> ".join([*ids, ids[0]])
    first = workflow.nodes[ids[0]]
    field = next(f for f, link in first.links().items() if link.node in ids)
    return [WorkflowError(f"the graph has a cycle: {path}", first.location(field))]
