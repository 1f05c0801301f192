"""The job queue: one SQLite file (WAL) under the data folder; every accepted job is committed."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "finished", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    workflow TEXT NOT NULL,
    inputs TEXT NOT NULL,
    created REAL NOT NULL,
    report TEXT,
    outputs TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (state, priority DESC, seq);
"""


@dataclass(frozen=True)
class Job:
    """One row of the jobs table, JSON columns decoded."""

    id: str
    state: str
    priority: int
    workflow: str
    inputs: dict[str, Any]
    created: float
    report: dict[str, Any] | None
    outputs: list[str] | None
    error: str | None

    def summary(self) -> dict[str, Any]:
        """The job as the API shows it (without the workflow text)."""
        return {
            "id": self.id,
            "state": self.state,
            "priority": self.priority,
            "inputs": self.inputs,
            "created": self.created,
            "report": self.report,
            "outputs": self.outputs,
            "error": self.error,
        }


_COLUMNS = "id, state, priority, workflow, inputs, created, report, outputs, error"


def _job(row: tuple[Any, ...]) -> Job:
    id_, state, priority, workflow, inputs, created, report, outputs, error = row
    return Job(
        id_,
        state,
        priority,
        workflow,
        json.loads(inputs),
        created,
        json.loads(report) if report else None,
        json.loads(outputs) if outputs else None,
        error,
    )


class JobQueue:
    """Jobs in ``DATA/queue.sqlite``; opening it puts jobs left 'running' back in the queue."""

    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "queue.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self.recovered = self._recover()

    def _recover(self) -> int:
        """Jobs a crash left 'running' run again from the start; returns how many."""
        with self._lock:
            cursor = self._db.execute("UPDATE jobs SET state='queued' WHERE state='running'")
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def submit(self, workflow: str, inputs: dict[str, Any], priority: int = 0) -> tuple[str, int]:
        """Store a new queued job (committed on return); returns its id and queue position (0 = next)."""
        job_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute(
                "INSERT INTO jobs (id, seq, state, priority, workflow, inputs, created)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (job_id, seq, priority, workflow, json.dumps(inputs), time.time()),
            )
            self._db.execute("COMMIT")
            return job_id, self._position(priority, seq)

    def _position(self, priority: int, seq: int) -> int:
        ahead = self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE state='queued' AND (priority > ? OR (priority = ? AND seq < ?))",
            (priority, priority, seq),
        ).fetchone()[0]
        return int(ahead)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs, newest first, optionally of one state."""
        where, args = ("WHERE state=?", [state]) if state else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [_job(row) for row in rows]

    def claim(self) -> Job | None:
        """Mark the next queued job (highest priority, then oldest) running and return it, atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state='queued' ORDER BY priority DESC, seq LIMIT 1"
            ).fetchone()
            if row:
                self._db.execute("UPDATE jobs SET state='running' WHERE id=?", (row[0],))
            self._db.execute("COMMIT")
        return replace(_job(row), state="running") if row else None

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False when it is not queued (running or done)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET state='cancelled' WHERE id=? AND state='queued'", (job_id,)
            )
            return cursor.rowcount == 1

    def reprioritize(self, job_id: str, priority: int) -> bool:
        """Change a queued job's priority; False when it is not queued."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET priority=? WHERE id=? AND state='queued'", (priority, job_id)
            )
            return cursor.rowcount == 1

    def finish(self, job_id: str, report: dict[str, Any], outputs: list[str]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state='finished', report=?, outputs=?, error=NULL WHERE id=?",
                (json.dumps(report, default=str), json.dumps(outputs), job_id),
            )

    def fail(self, job_id: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE jobs SET state='failed', error=? WHERE id=?", (error, job_id))
