"""Progress on a terminal: a line per node and a bar for each denoise loop, from runner events."""

from __future__ import annotations

from typing import TextIO

from tqdm import tqdm

from sdflow.runner.core.events import Event, NodeFinished, NodeWarning, StepProgress


class ProgressPrinter:
    """An event listener that writes progress to ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.bar: tqdm | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeWarning):
            print(f"warning: {event.message}", file=self.stream)
        elif isinstance(event, StepProgress):
            if self.bar is None:
                self.bar = tqdm(total=event.total, desc=event.node_id, file=self.stream, leave=False)
            self.bar.update(event.index - self.bar.n)
        elif isinstance(event, NodeFinished):
            if self.bar is not None:
                self.bar.close()
                self.bar = None
            print(
                f"  {event.node_id:<16} {event.type:<16} {event.status:<6} {event.seconds:8.3f}s",
                file=self.stream,
            )


class WarningPrinter:
    """An event listener that writes only warnings (for --quiet: warnings are never silenced)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodeWarning):
            print(f"warning: {event.message}", file=self.stream)
