"""The per-run scope of node hooks: what one run's prechecks, fingerprints and runs share."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdflow.models import folders
from sdflow.models.access import Sandbox, sandboxed


@dataclass
class RunScope:
    """Made once per run by the runner and handed to every hook: inside it each model folder is
    listed once, and ``remember`` works a value out once (a resolved model path...)."""

    listings: dict[Path, list[Path]] = field(default_factory=dict)
    memo: dict[Hashable, Any] = field(default_factory=dict)
    sandbox: Sandbox | None = None  # the folders a restricted run may read (None: any)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Model-folder look-ups made inside share this scope's listings (and its sandbox)."""
        with folders.listed_once(self.listings), sandboxed(self.sandbox):
            yield

    def remember(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` the first time ``key`` is asked for in this scope, the same value after
        (a failure is not remembered: it is raised again next time)."""
        if key not in self.memo:
            with self.active():
                self.memo[key] = compute()
        return self.memo[key]
