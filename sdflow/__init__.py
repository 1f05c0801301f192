"""sdflow: Stable Diffusion pipelines as graphs of typed nodes, validated before they run."""

from sdflow.errors import NodeError, SdflowError, UserError, WorkflowError
from sdflow.graphs import Workflow, dumps, load, loads, validate
from sdflow.runner import Runner, RunResult

__version__ = "0.1.0"

__all__ = [
    "NodeError",
    "RunResult",
    "Runner",
    "SdflowError",
    "UserError",
    "Workflow",
    "WorkflowError",
    "__version__",
    "dumps",
    "load",
    "loads",
    "validate",
]
