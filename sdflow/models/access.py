"""File access of a restricted run (a server's API jobs): the files a workflow names must lie inside
given folders (the model folders, the server's input folder), and nodes may not opt in to pickles.

A run's ``RunScope`` carries its ``Sandbox`` (None: unrestricted, as `sdflow run`); while the scope is
active the model resolver refuses paths outside it, and planning refuses path fields outside it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sandbox:
    """Folders a run may read files from; ``node_pickle``: may a node's ``allow_pickle`` be set."""

    roots: tuple[Path, ...]
    node_pickle: bool = False

    def allows(self, path: str | Path) -> bool:
        """True when ``path`` (symlinks followed) is inside one of the roots."""
        try:
            real = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            return False
        return any(real.is_relative_to(root.resolve()) for root in self.roots)

    def refusal(self, value: str) -> str | None:
        """Why a path field may not hold ``value``, or None: a path (absolute, or one that exists) must
        lie inside the roots; a bare name that exists nowhere is left to the model folders' lookup."""
        path = Path(value).expanduser()
        if not path.is_absolute() and not path.exists():
            return None
        if self.allows(path):
            return None
        return f"'{value}' is outside the folders this server reads (its input folder and the model folders)"


_ACTIVE: ContextVar[Sandbox | None] = ContextVar("sdflow_sandbox", default=None)


@contextlib.contextmanager
def sandboxed(sandbox: Sandbox | None) -> Iterator[None]:
    """Inside, ``refused`` applies ``sandbox`` (None: no restriction)."""
    token = _ACTIVE.set(sandbox)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def refused(path: str | Path) -> str | None:
    """Why the active sandbox forbids reading ``path``, or None (also when none is active)."""
    sandbox = _ACTIVE.get()
    if sandbox is None or sandbox.allows(path):
        return None
    return f"'{path}' is outside the folders this server reads (its input folder and the model folders)"
