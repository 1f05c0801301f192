"""The table of ComfyUI node handlers and of their widget names. A handler module registers its node
types with ``@handler("TypeName", widgets=(...))``; every module named ``handlers_*.py`` in this
package is loaded, so a new area (ControlNet, upscalers, new model families) is a new file, with no
list to edit."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdflow.errors import SdflowError
from sdflow.formats.comfy_json import ComfyNode
from sdflow.interop.comfy.context import Converter, Port, Problem

Handler = Callable[[Converter, ComfyNode], list[Port]]
HANDLERS: dict[str, Handler] = {}
# The UI format's ``widgets_values`` slots of each node type, in order. After a seed widget the UI
# stores the seed's "control after generate" setting ("randomize", "fixed"..., or `true`/`false` in
# files from 2023): a slot of its own, CONTROL, whose value is not an input.
WIDGETS: dict[str, tuple[str, ...]] = {}
CONTROL = "control_after_generate"
PREFIX = "handlers_"


def handler(*type_names: str, widgets: tuple[str, ...] | None = None) -> Callable[[Handler], Handler]:
    """Register the decorated function as the converter of the ComfyUI node types named, with their
    widget names in ``widgets_values`` order (CONTROL after a seed widget)."""

    def register(function: Handler) -> Handler:
        for name in type_names:
            if name in HANDLERS and HANDLERS[name] is not function:
                raise SdflowError(f"two handlers for ComfyUI node {name}: {function.__module__}")
            HANDLERS[name] = function
            if widgets is not None:
                WIDGETS[name] = widgets
        return function

    return register


def named_widgets(c: Converter, node: ComfyNode) -> ComfyNode:
    """``node`` with its positional UI widget values named by its type's widget list (links given
    to a widget win over the value left in its slot)."""
    values = node.widgets
    if not values:
        return node
    if node.type not in WIDGETS:
        raise Problem("sdflow has no widget list for this node type: export the API format")
    slots = WIDGETS[node.type]
    plain = tuple(name for name in slots if name != CONTROL)
    if len(values) == len(plain) < len(slots):  # written without the control slots (not by ComfyUI)
        slots = plain
    elif len(values) != len(slots):
        c.notes.append(
            f"node {node.id} ({node.type}): {len(values)} widget values where sdflow knows "
            f"{len(slots)} ({', '.join(slots)}): read by position"
        )
    named: dict[str, Any] = {name: v for name, v in zip(slots, values, strict=False) if name != CONTROL}
    return dataclasses.replace(node, inputs={**named, **node.inputs}, widgets=None)


def load_handlers() -> dict[str, Handler]:
    """Import every ``handlers_*`` module of this package (each registers its node types)."""
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name.startswith(PREFIX):
            importlib.import_module(f"{package}.{module.name}")
    return HANDLERS
