"""The server's settings and folders, kept on ``app.state.settings`` for every route module."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdflow.models import folders
from sdflow.models.access import Sandbox
from sdflow.models.resolver import BUILTIN_ROOT

MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """``data``: the data folder (queue.sqlite, outputs/, inputs/); limits and opt-ins."""

    data: Path
    max_body: int = MAX_BODY
    allow_pickle: bool = False  # the server's --allow-pickle: pickle weights load, nodes may opt in
    preview_every: int = 0  # a preview picture every K denoising steps (0: none)
    sync: str = "normal"  # accepting a job: "normal" writes it (kill-safe), "full" syncs it (power-loss safe)

    @property
    def outputs(self) -> Path:
        return self.data / "outputs"

    @property
    def inputs(self) -> Path:
        """Where uploads go and API jobs' relative file paths resolve."""
        return self.data / "inputs"

    def sandbox(self) -> Sandbox:
        """The folders API jobs may read: the input folder, the model folders, the built-in models."""
        roots = (self.inputs, *folders.roots(), BUILTIN_ROOT)
        return Sandbox(tuple(Path(root).resolve() for root in roots), node_pickle=self.allow_pickle)


def settings_for(data: str | Path, **options: object) -> Settings:
    """Settings with ``data`` made absolute and its folders created."""
    settings = Settings(Path(data).resolve(), **options)  # type: ignore[arg-type]
    for folder in (settings.outputs, settings.inputs):
        folder.mkdir(parents=True, exist_ok=True)
    return settings
