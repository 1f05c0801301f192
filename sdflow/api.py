"""The module-level ``sdflow.run``: one lazily created Runner shared by every call in the process."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from sdflow.graphs.model import Workflow
from sdflow.runner.executor import Runner, RunResult

_default: Runner | None = None
_lock = threading.Lock()


def default_runner() -> Runner:
    """The shared Runner (best device, outputs in ./outputs), made on first use; its caches persist."""
    global _default
    with _lock:
        if _default is None:
            _default = Runner()
        return _default


def run(
    graph: Workflow,
    inputs: dict[str, Any] | None = None,
    outputs: Iterable[str] | None = None,
    output_dir: str | None = None,
) -> RunResult:
    """Run a Graph (or any Workflow) on the shared runner; see ``Runner.run``."""
    return default_runner().run(graph, inputs=inputs, outputs=outputs, output_dir=output_dir)


def run_batch(
    graph: Workflow,
    items: Iterable[dict[str, Any]],
    batch: int = 4,
    outputs: Iterable[str] | None = None,
    output_dir: str | None = None,
) -> list[RunResult]:
    """One run per input dict of ``items`` on the shared runner, up to ``batch`` of them batched
    through the denoise loop and the VAE; see ``Runner.run_batch``."""
    return default_runner().run_batch(graph, items, batch=batch, outputs=outputs, output_dir=output_dir)
