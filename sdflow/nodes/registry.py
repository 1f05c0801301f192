"""The node catalogue: type name -> Node class, once every library is loaded. Built-ins live in
``sdflow.nodes.library``; other packages add theirs through the ``sdflow.nodes`` entry-point group.

With the lean imports of the `sdflow` command (sdflow.lean), ``get`` first imports only the library
module whose source defines a class of that name, so a run imports the modules of its own node
types; any other name (a plugin's, or one not found that way) loads the whole catalogue as before.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path

import sdflow.nodes.library as library
from sdflow import lean
from sdflow.nodes.base import REGISTERED, Node

__all__ = ["all_types", "get"]

CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)

_loaded = False
_index: dict[str, str] | None = None


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(library.__path__):
        importlib.import_module(f"{library.__name__}.{info.name}")
    for ep in entry_points(group="sdflow.nodes"):
        ep.load()


def _defining_module(type_name: str) -> str | None:
    """The built-in library module whose source defines a class ``type_name`` (read, not imported)."""
    global _index
    if _index is None:
        _index = {}
        for info in pkgutil.iter_modules(library.__path__):
            with_source = Path(library.__path__[0]) / f"{info.name}.py"
            try:
                names = CLASS.findall(with_source.read_text(encoding="utf-8"))
            except OSError:
                continue
            for name in names:
                _index.setdefault(name, info.name)
    return _index.get(type_name)


def get(type_name: str) -> type[Node] | None:
    """The class registered under ``type_name``, or None."""
    if not _loaded and lean.active():
        if type_name not in REGISTERED and (module := _defining_module(type_name)) is not None:
            importlib.import_module(f"{library.__name__}.{module}")
        if type_name in REGISTERED:
            return REGISTERED[type_name]
    _load()
    return REGISTERED.get(type_name)


def all_types() -> dict[str, type[Node]]:
    """Every registered node class, by type name, sorted."""
    _load()
    return dict(sorted(REGISTERED.items()))
