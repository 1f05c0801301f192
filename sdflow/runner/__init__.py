"""Execution: ordering, caching, devices and memory, progress events and the run report."""

from sdflow.runner.events import NodeFinished, NodeStarted, NodeWarning, StepProgress
from sdflow.runner.executor import Runner, RunResult
from sdflow.runner.report import NodeRecord, RunReport

__all__ = [
    "NodeFinished",
    "NodeRecord",
    "NodeStarted",
    "NodeWarning",
    "RunReport",
    "RunResult",
    "Runner",
    "StepProgress",
]
