"""The handles the Python builder hands out: a node's outputs, a workflow input, a node itself.

Each refers back to its ``Graph`` (``sdflow.graphs.builder``) by id; changes made through a handle are
checked there, as when the node was added.
"""

from __future__ import annotations

import builtins
import os
import sys
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from sdflow.errors import Location, suggestion
from sdflow.graphs.model import InputRef, InputSpec, Link, NodeSpec
from sdflow.nodes import registry
from sdflow.nodes.fields import fields_of
from sdflow.nodes.types import Port


class Graph(Protocol):
    """What a handle needs of its graph (``sdflow.graphs.builder.Graph`` is one)."""

    nodes: dict[str, NodeSpec]
    inputs: dict[str, InputSpec]

    def _change(self, node_id: str, given: dict[str, Any], where: Location) -> None: ...

    def _handle(self, value: Any) -> Any: ...


# Modules whose frames are the builder's own, skipped when locating the user's line.
BUILDER_MODULES = frozenset({__name__, "sdflow.graphs.builder"})


P = TypeVar("P", bound=Port, covariant=True)

# Attributes of a node handle; an output with one of these names is reachable only as .output(name).
HANDLE_ATTRIBUTES = ("id", "type", "graph", "spec", "outputs", "output", "set")


class Linkable(Generic[P]):
    """What a port field accepts: a node's Output, or (in the stubs) a node with exactly one output."""


class Output(Linkable[P]):
    """One output of a node; pass it to another node's field to connect the two."""

    def __init__(self, node: NodeHandle, name: str) -> None:
        self.node, self.name = node, name

    @property
    def type(self) -> builtins.type:
        """The port type this output carries."""
        return self.node.outputs[self.name]

    def ref(self) -> Link:
        return Link(self.node.id, self.name)

    def __str__(self) -> str:
        return f"{self.node.id}.{self.name}"

    def __repr__(self) -> str:
        return f"<Output {self}: {self.type.__name__}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Output) and (other.node, other.name) == (self.node, self.name)

    def __hash__(self) -> int:
        return hash((self.node, self.name))


class Input:
    """A workflow input; pass it to a constant field and choose its value per run."""

    def __init__(self, graph: Graph, name: str) -> None:
        self.graph, self.name = graph, name

    @property
    def spec(self) -> InputSpec:
        return self.graph.inputs[self.name]

    def ref(self) -> InputRef:
        return InputRef(self.name)

    def __repr__(self) -> str:
        return f"<Input {self.name}: {self.spec.type}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Input) and other.graph is self.graph and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self.graph), self.name))


class NodeHandle:
    """A node of a Graph: its attributes are its outputs, its items (``node["text"]``) its fields."""

    def __init__(self, graph: Graph, node_id: str) -> None:
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "id", node_id)

    graph: Graph
    id: str

    @property
    def spec(self) -> NodeSpec:
        return self.graph.nodes[self.id]

    @property
    def type(self) -> str:
        return self.spec.type

    @property
    def outputs(self) -> dict[str, builtins.type]:
        """The node's outputs and the types they carry."""
        cls = registry.get(self.type)
        return dict(cls.outputs) if cls else {}

    def output(self, name: str) -> Output[Any]:
        """The output ``name`` (same as the attribute, also for names the handle itself uses)."""
        if name not in self.outputs:
            more = suggestion(name, list(self.outputs))
            raise AttributeError(
                f"{self.type} '{self.id}' has no output '{name}'{more} "
                f"(outputs: {', '.join(self.outputs) or 'none'}; fields are read as node['{name}'])"
            )
        return Output(self, name)

    def ref(self) -> Link:
        return Link(self.id)

    def set(self, **values: Any) -> NodeHandle:
        """Change fields (constants, outputs or inputs), checked as when the node was added."""
        self.graph._change(self.id, values, caller())
        return self

    def __getattr__(self, name: str) -> Output[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.output(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"set fields with node['{name}'] = ... or node.set({name}=...)")

    def __getitem__(self, name: str) -> Any:
        """A field's value: a constant, an Output, a NodeHandle or an Input; its default if unset."""
        fields = fields_of_type(self.type)
        if name in self.spec.fields:
            return self.graph._handle(self.spec.fields[name])
        if name in fields:
            return fields[name].default
        raise KeyError(f"{self.type} has no field '{name}'" + suggestion(name, fields))

    def __setitem__(self, name: str, value: Any) -> None:
        self.graph._change(self.id, {name: value}, caller())

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<{self.type} '{self.id}'>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeHandle) and other.graph is self.graph and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.graph), self.id))


def fields_of_type(type_name: str) -> dict[str, Any]:
    cls = registry.get(type_name)
    return fields_of(cls) if cls else {}


def caller() -> Location:
    """The user's file and line: the first frame outside the builder's modules."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") in BUILDER_MODULES:
        frame = frame.f_back
    if frame is None:
        return Location()
    file = frame.f_code.co_filename
    if os.path.isabs(file) and file.startswith(os.getcwd() + os.sep):
        file = os.path.relpath(file)
    return Location(file, frame.f_lineno)
