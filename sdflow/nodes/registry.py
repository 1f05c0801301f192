"""The node registry: type name -> Node class. Built-ins live in ``sdflow.nodes.library``;
other packages add theirs through the ``sdflow.nodes`` entry-point group."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sdflow.nodes.base import Node

_REGISTRY: dict[str, type[Node]] = {}
_loaded = False


def register(cls: type[Node]) -> None:
    """Add a node class; a second class with the same type name is a programming error."""
    existing = _REGISTRY.get(cls.type_name)
    same_place = existing is not None and (existing.__module__, existing.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )
    if existing is not None and existing is not cls and not same_place:
        raise TypeError(f"node type '{cls.type_name}' is defined twice: {existing} and {cls}")
    _REGISTRY[cls.type_name] = cls


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import sdflow.nodes.library as library

    for info in pkgutil.iter_modules(library.__path__):
        importlib.import_module(f"{library.__name__}.{info.name}")
    for ep in entry_points(group="sdflow.nodes"):
        ep.load()


def get(type_name: str) -> type[Node] | None:
    """The class registered under ``type_name``, or None."""
    _load()
    return _REGISTRY.get(type_name)


def all_types() -> dict[str, type[Node]]:
    """Every registered node class, by type name, sorted."""
    _load()
    return dict(sorted(_REGISTRY.items()))


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The most similar valid name, for 'did you mean' hints."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        return lowered.get(name.lower())
    return matches[0]


def suggestion(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    """ "; did you mean 'X'?" for the closest valid name, else ``otherwise`` (appended to messages)."""
    hint = closest(name, list(choices))
    return f"; did you mean '{hint}'?" if hint else otherwise
