"""Execution: the core (Runner, caches, events, report), scale-out (many runs, Ray) and devices."""

from sdflow.runner.core.events import NodeFinished, NodeStarted, NodeWarning, StepProgress
from sdflow.runner.core.executor import Runner
from sdflow.runner.core.report import NodeRecord, RunReport
from sdflow.runner.core.result import RunResult

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
