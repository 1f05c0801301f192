"""sdflow: Stable Diffusion pipelines as graphs of typed nodes, validated before they run.

Names are imported on first use, so `import sdflow` (and the pytest plugin) stays cheap until
something needs torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "default_runner": "sdflow.api",
    "run": "sdflow.api",
    "run_batch": "sdflow.api",
    "NodeError": "sdflow.errors",
    "SdflowError": "sdflow.errors",
    "UserError": "sdflow.errors",
    "WorkflowError": "sdflow.errors",
    "WorkflowErrors": "sdflow.errors",
    "SdflowWarning": "sdflow.errors",
    "Workflow": "sdflow.graphs",
    "dumps": "sdflow.graphs",
    "validate": "sdflow.graphs",
    "Graph": "sdflow.graphs.builder",
    "Input": "sdflow.graphs.handles",
    "NodeHandle": "sdflow.graphs.handles",
    "Output": "sdflow.graphs.handles",
    "load": "sdflow.graphs.builder",
    "loads": "sdflow.graphs.builder",
    "NodeFinished": "sdflow.runner",
    "NodeStarted": "sdflow.runner",
    "NodeWarning": "sdflow.runner",
    "Runner": "sdflow.runner",
    "RunResult": "sdflow.runner",
    "StepProgress": "sdflow.runner",
    "JobResult": "sdflow.runner.scale.many",
    "LocalBackend": "sdflow.runner.scale.many",
    "run_many": "sdflow.runner.scale.many",
    "RayBackend": "sdflow.runner.scale.distributed",
}

__all__ = [
    "Graph",
    "Input",
    "JobResult",
    "LocalBackend",
    "NodeError",
    "NodeFinished",
    "NodeHandle",
    "NodeStarted",
    "NodeWarning",
    "Output",
    "RayBackend",
    "RunResult",
    "Runner",
    "SdflowError",
    "SdflowWarning",
    "StepProgress",
    "UserError",
    "Workflow",
    "WorkflowError",
    "WorkflowErrors",
    "__version__",
    "default_runner",
    "dumps",
    "load",
    "loads",
    "run",
    "run_batch",
    "run_many",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sdflow' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from sdflow.api import default_runner, run, run_batch
    from sdflow.errors import NodeError, SdflowError, SdflowWarning, UserError, WorkflowError, WorkflowErrors
    from sdflow.graphs import Workflow, dumps, validate
    from sdflow.graphs.builder import Graph, load, loads
    from sdflow.graphs.handles import Input, NodeHandle, Output
    from sdflow.runner import NodeFinished, NodeStarted, NodeWarning, Runner, RunResult, StepProgress
    from sdflow.runner.scale.distributed import RayBackend
    from sdflow.runner.scale.many import JobResult, LocalBackend, run_many
