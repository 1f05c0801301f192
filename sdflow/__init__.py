"""sdflow: Stable Diffusion pipelines as graphs of typed nodes, validated before they run."""

from sdflow.api import default_runner, run
from sdflow.errors import NodeError, SdflowError, UserError, WorkflowError, WorkflowErrors
from sdflow.graphs import Workflow, dumps, validate
from sdflow.graphs.builder import Graph, Input, NodeHandle, Output, load, loads
from sdflow.runner import NodeFinished, NodeStarted, Runner, RunResult, StepProgress

__version__ = "0.1.0"

__all__ = [
    "Graph",
    "Input",
    "NodeError",
    "NodeFinished",
    "NodeHandle",
    "NodeStarted",
    "Output",
    "RunResult",
    "Runner",
    "SdflowError",
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
    "validate",
]
