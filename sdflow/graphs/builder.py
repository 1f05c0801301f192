"""Building and changing workflows in Python: node types are typed calls that return output handles.

A ``Graph`` *is* a ``Workflow`` (the model the YAML loader makes), so ``validate``, ``dumps`` and the
runner take it unchanged. Every addition or change is checked at once with the loader's own per-node
checks (``validate.check_node``), so mistakes are reported alike, here with the Python file and line.
"""

from __future__ import annotations

import builtins
import copy
import inspect
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from sdflow.errors import Location, UserError, WorkflowError, WorkflowErrors, closest, suggestion
from sdflow.graphs import loading, yaml_io
from sdflow.graphs.handles import Input, NodeHandle, Output, caller
from sdflow.graphs.model import INPUT_TYPES, NAME, InputRef, InputSpec, Link, NodeSpec, Workflow
from sdflow.graphs.node_calls import NodeCalls
from sdflow.graphs.validate import build_graph, check_node
from sdflow.nodes import registry
from sdflow.nodes.base import Node
from sdflow.nodes.fields import fields_of

_MISSING: Any = object()


class Graph(Workflow, NodeCalls):
    """A workflow built or changed in Python. ``g.CLIPEncode(clip=ckpt.clip, text="...")`` adds a
    node and returns its handle; any registered node type is a method (typed in node_calls.pyi)."""

    @classmethod
    def from_workflow(cls, workflow: Workflow) -> Graph:
        """A Graph holding a copy of ``workflow`` (e.g. one the YAML loader made)."""
        return cls(
            nodes=copy.deepcopy(workflow.nodes),
            inputs=copy.deepcopy(workflow.inputs),
            version=workflow.version,
            file=workflow.file,
            source=workflow.source,
            base_dir=workflow.base_dir,
        )

    def copy(self) -> Graph:
        """An independent copy: changing it leaves this graph as it is."""
        return Graph.from_workflow(self)

    # -- inputs ---------------------------------------------------------------------------------

    def input(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        type: str | builtins.type | None = None,
        description: str = "",
    ) -> Input:
        """Declare a workflow input (its type from ``type`` or the default), or get a declared one."""
        where = caller()
        if name in self.inputs:
            if default is _MISSING and type is None and not description:
                return Input(self, name)
            raise WorkflowError(f"input '{name}' is already declared; use g.input('{name}')", where)
        if not NAME.match(name):
            raise WorkflowError(f"input name '{name}' must be letters, digits, '_' or '-'", where)
        kind = _input_type(name, default, type, where)
        spec = InputSpec(name, kind, None, default is _MISSING, description, where)
        if default is not _MISSING:
            try:
                spec.default = spec.check(default)
            except ValueError as exc:
                raise WorkflowError(str(exc), where) from None
        self.inputs[name] = spec
        self.source = None
        return Input(self, name)

    # -- nodes ----------------------------------------------------------------------------------

    def add(self, type_name: str, /, id: str | None = None, **fields: Any) -> NodeHandle:
        """Add a node of type ``type_name``; ``g.add("CLIPEncode", ...)`` is ``g.CLIPEncode(...)``."""
        where = caller()
        node_id = id if id is not None else self._fresh_id(type_name)
        spec = NodeSpec(node_id, type_name, loc=Location(where.file, where.line, node=node_id))
        if not isinstance(node_id, str) or not NAME.match(node_id):
            raise WorkflowError(f"node id {node_id!r} must be letters, digits, '_' or '-'", spec.location())
        if node_id in self.nodes:
            used = self.nodes[node_id].type
            raise WorkflowError(f"node id '{node_id}' is already used by a {used}", spec.location())
        spec.fields, errors = self._values(spec, fields)
        errors += check_node(self, spec)
        if errors:
            raise WorkflowErrors(errors)
        self.nodes[node_id] = spec
        self.source = None
        return NodeHandle(self, node_id)

    def remove(self, node_id: str) -> None:
        """Remove a node that no other node links to."""
        users = [s.id for s in self.nodes.values() for link in s.links().values() if link.node == node_id]
        if users:
            where = caller()
            raise WorkflowError(
                f"cannot remove '{node_id}': it feeds {', '.join(sorted(set(users)))}",
                Location(where.file, where.line, node=node_id),
            )
        self[node_id]  # a KeyError naming the closest id when there is no such node
        del self.nodes[node_id]
        self.source = None

    def __getitem__(self, node_id: str) -> NodeHandle:
        if node_id not in self.nodes:
            raise KeyError(f"no node '{node_id}'" + suggestion(node_id, self.nodes))
        return NodeHandle(self, node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    # -- YAML -----------------------------------------------------------------------------------

    def to_yaml(self) -> str:
        """The workflow as YAML; ``sdflow.loads`` reads it back to an equal graph."""
        return yaml_io.dumps(self)

    def save(self, path: str | Path) -> Path:
        """Write the workflow as YAML to ``path`` (replacing it) and return the path. Relative file
        paths (LoadImage's ``path``...) are rewritten so that they still name the same files."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        moved = self.copy()
        moved._rebase(path.resolve().parent)
        path.write_text(moved.to_yaml(), encoding="utf-8")
        return path

    # -- internals ------------------------------------------------------------------------------

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """Node types as methods, found in the registry (so new node classes need no edit here)."""
            cls = registry.get(name) if not name.startswith("_") else None
            if cls is None:
                hint = closest(name, list(registry.all_types())) if name[:1].isupper() else None
                more = f"; did you mean the node type '{hint}'?" if hint else ""
                raise AttributeError(f"'Graph' object has no attribute '{name}'{more}")
            return _NodeCall(self, cls)

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *registry.all_types()]

    def __repr__(self) -> str:
        inputs = ", ".join(self.inputs) or "none"
        return f"<Graph: {len(self.nodes)} nodes, inputs: {inputs}>"

    def _fresh_id(self, type_name: str) -> str:
        base = type_name.lower()
        node_id, number = base, 1
        while node_id in self.nodes:
            number += 1
            node_id = f"{base}_{number}"
        return node_id

    def _rebase(self, folder: Path) -> None:
        """Make relative path constants relative to ``folder`` instead of where they resolve now
        (the workflow file's folder, a picture's recorded folder, else the working directory, as the
        runner resolves them)."""
        base = self.path_base().resolve()

        def moved(value: Any, is_name: bool) -> Any:
            if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
                return value
            if is_name and not (base / value).exists():
                return value  # a name in the model folders, not a path
            return Path(os.path.relpath(base / value, folder)).as_posix()

        inputs_done = set()
        for spec in self.nodes.values():
            cls = registry.get(spec.type)
            for name in cls.path_fields if cls else ():
                if name not in spec.fields:  # an optional path field left at its default
                    continue
                value, is_name = spec.fields[name], name in cls.folder_kinds
                if isinstance(value, InputRef):  # a path given by a workflow input: move its default
                    entry = self.inputs.get(value.name)
                    if entry is not None and entry.type == "str" and value.name not in inputs_done:
                        entry.default = moved(entry.default, is_name)
                        inputs_done.add(value.name)
                    continue
                spec.fields[name] = moved(value, is_name)

    def _values(self, spec: NodeSpec, given: dict[str, Any]) -> tuple[dict[str, Any], list[UserError]]:
        """Field values as the model stores them: handles become Links and InputRefs."""
        values, errors = dict(spec.fields), list[UserError]()
        for name, value in given.items():
            if isinstance(value, (Output, NodeHandle, Input)):
                owner = value.node.graph if isinstance(value, Output) else value.graph
                if owner is not self:
                    message = f"{value!r} belongs to another Graph; link nodes of one graph only"
                    errors.append(WorkflowError(message, spec.location(name)))
                    continue
                value = value.ref()
            values[name] = value
        return values, errors

    def _handle(self, value: Any) -> Any:
        """A stored field value as the builder hands it out."""
        if isinstance(value, InputRef):
            return Input(self, value.name)
        if isinstance(value, Link) and value.node in self.nodes:
            node = NodeHandle(self, value.node)
            return node if value.output is None else Output(node, value.output)
        return value

    def _change(self, node_id: str, given: dict[str, Any], where: Location) -> None:
        old = self.nodes[node_id]
        spec = NodeSpec(old.id, old.type, dict(old.fields), old.loc, dict(old.field_locs))
        for name in given:
            spec.field_locs[name] = Location(where.file, where.line)
        spec.fields, errors = self._values(spec, given)
        errors += check_node(self, spec)
        graph = build_graph(self)
        for name, value in spec.fields.items():
            cyclic = (
                isinstance(value, Link) and value.node in graph and nx.has_path(graph, node_id, value.node)
            )
            if name in given and cyclic:
                message = f"linking {value} here would make a cycle: '{node_id}' feeds '{value.node}'"
                errors.append(WorkflowError(message, spec.location(name)))
        if errors:
            raise WorkflowErrors(errors)
        self.nodes[node_id] = spec
        self.source = None


class _NodeCall:
    """``graph.SomeType``: call it with the node's fields to add a node; has a real signature."""

    def __init__(self, graph: Graph, cls: type[Node]) -> None:
        self._graph, self._type = graph, cls.type_name
        self.__name__ = self.__qualname__ = cls.type_name
        self.__doc__ = cls.summary()
        self.__signature__ = signature(cls)

    def __call__(self, id: str | None = None, **fields: Any) -> NodeHandle:
        return self._graph.add(self._type, id=id, **fields)

    def __repr__(self) -> str:
        return f"<node call {self._type}{self.__signature__}>"


@cache
def signature(cls: type[Node]) -> inspect.Signature:
    """The keyword-only signature of a node call: ``id`` then the node's fields with their defaults."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.Parameter("id", keyword, default=None, annotation=str | None)]
    for name, field in fields_of(cls).items():
        default = inspect.Parameter.empty if field.required else field.default
        parameters.append(inspect.Parameter(name, keyword, default=default, annotation=field.annotation))
    return inspect.Signature(parameters, return_annotation=NodeHandle)


def _input_type(name: str, default: Any, given: str | builtins.type | None, where: Location) -> str:
    """An input's type name from ``type=`` (a name or int/float/str/bool) or from its default."""
    if given is not None:
        kind = given if isinstance(given, str) else getattr(given, "__name__", "")
        if kind not in INPUT_TYPES:
            raise WorkflowError(f"input '{name}': type must be one of {', '.join(INPUT_TYPES)}", where)
        return kind
    if default is _MISSING:
        raise WorkflowError(f"input '{name}' needs a default or a type= (for a required input)", where)
    for kind, accepted in INPUT_TYPES.items():
        if isinstance(default, bool) == (kind == "bool") and isinstance(default, accepted):
            return kind
    raise WorkflowError(f"input '{name}': a default must be a number, string or boolean", where)


def load(path: str | Path) -> Graph:
    """Load a YAML workflow as a Graph to change, run or save again."""
    return Graph.from_workflow(loading.load(path))


def loads(text: str, file: str | None = None) -> Graph:
    """Parse YAML workflow text as a Graph (``file`` is only used in messages)."""
    return Graph.from_workflow(yaml_io.loads(text, file))
