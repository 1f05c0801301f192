"""Execution: the core (Runner, caches, events, report), scale-out (many runs, Ray) and devices."""

from sdflow.runner.core.events import NodeFinished, NodeStarted, NodeWarning, StepProgress
from sdflow.runner.core.executor import Runner, RunResult
from sdflow.runner.core.report import NodeRecord, RunReport

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
