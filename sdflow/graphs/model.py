"""The workflow model, front-end neutral: the YAML loader and the Python builder both make these."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdflow.errors import Location
from sdflow.nodes import registry

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
INPUT_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (float, int),
    "str": str,
    "bool": bool,
}


@dataclass(frozen=True)
class Link:
    """A field fed by another node's output; ``output`` None means that node's only output."""

    node: str
    output: str | None = None

    def __str__(self) -> str:
        return self.node if self.output is None else f"{self.node}.{self.output}"


@dataclass(frozen=True)
class InputRef:
    """A field fed by a named workflow input."""

    name: str


@dataclass
class InputSpec:
    """A named workflow parameter with its type and (optional) default."""

    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str = ""
    loc: Location | None = None

    def check(self, value: Any) -> Any:
        """``value`` if it fits this input's type (ints are accepted as floats), else ValueError."""
        expected = INPUT_TYPES[self.type]
        if (isinstance(value, bool) and self.type != "bool") or not isinstance(value, expected):
            article = "an" if self.type == "int" else "a"
            raise ValueError(f"input '{self.name}' takes {article} {self.type}, got {value!r}")
        return float(value) if self.type == "float" else value


@dataclass
class NodeSpec:
    """One node of a workflow: its id, type and field values (constants, Links or InputRefs)."""

    id: str
    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    loc: Location | None = None
    field_locs: dict[str, Location] = field(default_factory=dict)

    def location(self, field_name: str | None = None) -> Location:
        """Where this node (or one of its fields) is written, with node and field named."""
        base = self.field_locs.get(field_name) if field_name else None
        base = base or self.loc or Location()
        return Location(base.file, base.line, base.col, self.id, field_name)

    def links(self) -> dict[str, Link]:
        return {k: v for k, v in self.fields.items() if isinstance(v, Link)}


@dataclass
class Workflow:
    """A whole workflow: version, inputs and nodes, plus where it came from (for messages)."""

    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    version: int = 1
    file: str | None = None
    source: str | None = None
    # Folder relative file paths resolve against; None: the workflow file's folder (or the current
    # folder when there is no file). A workflow loaded from a picture sets it (see graphs/picture.py).
    base_dir: str | None = None

    def path_base(self) -> Path:
        """The folder relative file paths in this workflow resolve against."""
        if self.base_dir is not None:
            return Path(self.base_dir)
        source = Path(self.file) if self.file else None
        return source.resolve().parent if source is not None and source.is_file() else Path.cwd()

    def location(self, node: str | None = None, field_name: str | None = None) -> Location:
        if node is not None and node in self.nodes:
            return self.nodes[node].location(field_name)
        return Location(self.file, node=node, field=field_name)

    def structure(self) -> dict[str, Any]:
        """Everything that defines the graph, without locations: equal graphs give equal values."""
        return {
            "version": self.version,
            "inputs": {n: (i.type, i.default, i.required, i.description) for n, i in self.inputs.items()},
            "nodes": {
                n: (s.type, {k: self._canonical(v) for k, v in s.fields.items()})
                for n, s in self.nodes.items()
            },
        }

    def _canonical(self, value: Any) -> Any:
        """``!link node`` and ``!link node.out`` are the same edge when ``out`` is node's only output."""
        if not isinstance(value, Link) or value.output is not None or value.node not in self.nodes:
            return value
        cls = registry.get(self.nodes[value.node].type)
        if cls is None or len(cls.outputs) != 1:
            return value
        return Link(value.node, next(iter(cls.outputs)))
