"""The module-level ``sdflow.run``: one lazily created Runner shared by every call in the process."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sdflow.graphs.model import Workflow
from sdflow.runner.core.result import RunResult
from sdflow.runner.core.shared import default_runner

__all__ = ["default_runner", "run", "run_batch"]


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
