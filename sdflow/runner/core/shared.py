"""The process's shared Runner: made on first use (best device, outputs in ./outputs); its caches persist."""

from __future__ import annotations

import threading

from sdflow.runner.core.executor import Runner

_default: Runner | None = None
_lock = threading.Lock()


def default_runner() -> Runner:
    """The shared Runner, made on first use by whichever thread asks first."""
    global _default
    with _lock:
        if _default is None:
            _default = Runner()
        return _default
