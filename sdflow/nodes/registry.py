"""The node catalogue: type name -> Node class, once every library is loaded. Built-ins live in
``sdflow.nodes.library``; other packages add theirs through the ``sdflow.nodes`` entry-point group."""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points

import sdflow.nodes.library as library
from sdflow.nodes.base import REGISTERED, Node

__all__ = ["all_types", "get"]

_loaded = False


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(library.__path__):
        importlib.import_module(f"{library.__name__}.{info.name}")
    for ep in entry_points(group="sdflow.nodes"):
        ep.load()


def get(type_name: str) -> type[Node] | None:
    """The class registered under ``type_name``, or None."""
    _load()
    return REGISTERED.get(type_name)


def all_types() -> dict[str, type[Node]]:
    """Every registered node class, by type name, sorted."""
    _load()
    return dict(sorted(REGISTERED.items()))
