"""What the ComfyUI-compatible routes remember of a job beside the queue: the API-format prompt it
came from, the client that sent it, its ComfyUI queue number and which ComfyUI node each sdflow node
was made from. One table in the queue's SQLite file, on its own connection."""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS comfy_prompts (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT UNIQUE NOT NULL,
    client_id TEXT,
    prompt TEXT NOT NULL,
    origins TEXT NOT NULL,
    outputs TEXT NOT NULL,
    extra TEXT NOT NULL
);
"""
_COLUMNS = "number, job, client_id, prompt, origins, outputs, extra"


@dataclass(frozen=True)
class ComfyPrompt:
    """One ComfyUI submission: ``origins`` maps sdflow node ids to ComfyUI node ids, ``outputs`` are
    the ComfyUI ids of its output nodes, ``extra`` ComfyUI's extra_data (with the client_id)."""

    number: int
    job: str
    client_id: str | None
    prompt: dict[str, Any]
    origins: dict[str, str]
    outputs: list[str]
    extra: dict[str, Any]

    def comfy_node(self, sdflow_node: str) -> str:
        """The ComfyUI id of the node ``sdflow_node`` was made from (itself when unknown)."""
        return self.origins.get(sdflow_node, sdflow_node)


class ComfyStore:
    """The comfy_prompts table of ``DATA/queue.sqlite``."""

    def __init__(self, data_dir: str | Path) -> None:
        path = Path(data_dir) / "queue.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._found: dict[str, ComfyPrompt] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(
        self,
        job: str,
        client_id: str | None,
        prompt: dict[str, Any],
        origins: dict[str, str],
        outputs: list[str],
        extra: dict[str, Any],
    ) -> int:
        """Remember a submitted prompt (committed on return); returns its queue number."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO comfy_prompts (job, client_id, prompt, origins, outputs, extra)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (job, client_id, *(json.dumps(value) for value in (prompt, origins, outputs, extra))),
            )
            return int(cursor.lastrowid or 0)

    def get(self, job: str) -> ComfyPrompt | None:
        """The prompt job ``job`` came from; None for a job submitted through /api/jobs."""
        if job in self._found:
            return self._found[job]
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM comfy_prompts WHERE job=?",
                (job,),
            ).fetchone()
        if row is None:
            return None
        number, job_id, client_id, *texts = row
        decoded = (json.loads(text) for text in texts)
        found = ComfyPrompt(number, job_id, client_id, *decoded)
        if len(self._found) > 1000:
            self._found.clear()
        self._found[job] = found
        return found


def store_of(state: Any) -> ComfyStore:
    """The app's ComfyStore (``app.state.comfy``), opened on first use; route handlers run on the one
    event loop thread, so two cannot open it at once."""
    if getattr(state, "comfy", None) is None:
        state.comfy = ComfyStore(state.settings.data)
    return state.comfy
