"""What the `sdflow` command keeps between runs (sdflow.lean): the folder, atomic writes, and measured
figures of this machine."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sdflow`` (``~/.cache/sdflow``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sdflow"


def write_kept(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; nothing when the cache folder is not writable."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as part:
            part.write(data)
        os.replace(part.name, path)


def kept_figure(key: str, measure: Callable[[], float]) -> float:
    """A measured figure of this machine kept between runs under ``key`` (which names what it
    depends on), measured the first time."""
    path = cache_dir() / "figures.json"
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError):
        figures = {}
    if not isinstance(figures, dict) or not isinstance(figures.get(key), float):
        figures = figures if isinstance(figures, dict) else {}
        figures[key] = float(measure())
        write_kept(path, json.dumps(figures, indent=1, sort_keys=True).encode())
    return figures[key]
