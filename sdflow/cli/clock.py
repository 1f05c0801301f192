"""When the command started, read before anything heavy is imported, and the first step's moment.

``--report`` says how a one-shot run's wall time divides: imports and setup up to the first node, up
to the end of the first denoising step (the time a user waits before anything is drawn), and in all.
"""

from __future__ import annotations

import time
from typing import Any

STARTED = time.monotonic()


class FirstStep:
    """An event listener that keeps the moment the first node started and the first step ended."""

    def __init__(self) -> None:
        self.first_node: float | None = None
        self.first_step: float | None = None

    def __call__(self, event: Any) -> None:
        from sdflow.runner.core.events import NodeStarted, StepProgress

        if self.first_node is None and isinstance(event, NodeStarted):
            self.first_node = time.monotonic()
        elif self.first_step is None and isinstance(event, StepProgress):
            self.first_step = time.monotonic()

    def timing(self) -> dict[str, float | None]:
        """Seconds since the command started: to the first node, to the first step's end, and now."""

        def since(moment: float | None) -> float | None:
            return None if moment is None else round(moment - STARTED, 6)

        return {
            "to_first_node": since(self.first_node),
            "to_first_step": since(self.first_step),
            "wall": since(time.monotonic()),
        }
