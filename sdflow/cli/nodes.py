"""`sdflow nodes`: every node type on two lines, or one type's fields, outputs and module."""

from __future__ import annotations

import argparse
from typing import Any

from sdflow.cli.options import EXIT_OK
from sdflow.errors import Location, WorkflowError, suggestion
from sdflow.nodes import registry
from sdflow.nodes.fields import fields_of, type_label


def add_command(commands: Any) -> None:
    """The `nodes` sub-command."""
    nodes = commands.add_parser("nodes", help="list node types, or describe one")
    nodes.add_argument("type", nargs="?")
    nodes.set_defaults(handler=_nodes)


def _nodes(args: argparse.Namespace) -> int:
    types = registry.all_types()
    if args.type is None:
        for cls in types.values():
            print(f"{cls.type_name}: {cls.summary()}\n  {signature(cls)}\n  in {cls.__module__}")
        print("\n`sdflow nodes TYPE` describes each field.")
        return EXIT_OK
    cls = types.get(args.type)
    if cls is None:
        more = suggestion(args.type, types)
        raise WorkflowError(f"unknown node type '{args.type}'{more}", Location(field="TYPE"))
    print(describe(cls))
    return EXIT_OK


def signature(cls: type) -> str:
    """A node type on one line: typed inputs with defaults and ranges -> typed outputs."""
    parts = []
    for name, field in fields_of(cls).items():
        text = f"{name}: {type_label(field.annotation)}"
        if not field.required and not field.is_port:
            text += f" = {field.default!r}"
        limits = field.constraints()
        if limits and not limits.startswith("one of"):
            text += f" [{limits}]"
        parts.append(text)
    outputs = ", ".join(f"{name}: {kind.__name__}" for name, kind in cls.outputs.items())
    return f"({', '.join(parts)}) -> {outputs}"


def describe(cls: type) -> str:
    """A node type's help: summary, typed inputs with defaults and ranges, outputs."""
    lines = [
        f"{cls.type_name} (version {cls.version}): {cls.summary()}",
        f"module: {cls.__module__}",
        "inputs:",
    ]
    for name, field in fields_of(cls).items():
        text = f"  {name}: {type_label(field.annotation)}"
        if field.is_port:
            text += " (link)" if field.required else " (optional link)"
        elif field.required:
            text += " (required)"
        else:
            text += f" = {field.default!r}"
        limits = field.constraints()
        if limits and not limits.startswith("one of"):
            text += f" [{limits}]"
        if field.description:
            text += f" — {field.description}"
        lines.append(text)
    lines.append("outputs:")
    lines += [f"  {name}: {kind.__name__}" for name, kind in cls.outputs.items()]
    return "\n".join(lines)
