"""The job queue: one SQLite file (WAL) under the data folder; every accepted job is committed."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
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
CREATE INDEX IF NOT EXISTS jobs_seq ON jobs (seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# columns added after the first release: (name, declaration); added to older databases on open
_ADDED = (
    ("webhook", "TEXT"),
    ("rerun_of", "TEXT"),
    ("started", "REAL"),
    ("ended", "REAL"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
)


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
    webhook: str | None = None
    rerun_of: str | None = None
    started: float | None = None
    ended: float | None = None
    attempts: int = 0

    def summary(self) -> dict[str, Any]:
        """The job as the API shows it (without the workflow text)."""
        return {
            "id": self.id,
            "state": self.state,
            "priority": self.priority,
            "inputs": self.inputs,
            "created": self.created,
            "started": self.started,
            "ended": self.ended,
            "attempts": self.attempts,
            "rerun_of": self.rerun_of,
            "webhook": self.webhook,
            "report": self.report,
            "outputs": self.outputs,
            "error": self.error,
        }


_COLUMNS = (
    "id, state, priority, workflow, inputs, created, report, outputs, error,"
    " webhook, rerun_of, started, ended, attempts"
)


# one statement: the job numbered after the last one (jobs_seq), atomic without a transaction
_INSERT = (
    "INSERT INTO jobs (id, seq, state, priority, workflow, inputs, created, webhook, rerun_of)"
    " VALUES (?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), 'queued', ?, ?, ?, ?, ?, ?) RETURNING seq"
)


_CLAIM = (
    "UPDATE jobs SET state='running', started=?, attempts=attempts+1 WHERE id = ("
    " SELECT id FROM jobs WHERE state='queued' ORDER BY priority DESC, seq LIMIT 1)"
    " AND NOT EXISTS (SELECT 1 FROM meta WHERE key='paused' AND value='1')"
    f" RETURNING {_COLUMNS}"
)


_ACTIVE = (
    "SELECT (SELECT COUNT(*) FROM jobs WHERE state='queued'),"
    " (SELECT COUNT(*) FROM jobs WHERE state='running'),"
    " EXISTS (SELECT 1 FROM meta WHERE key='paused' AND value='1')"
)


def _job(row: tuple[Any, ...]) -> Job:
    id_, state, priority, workflow, inputs, created, report, outputs, error, *rest = row
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
        *rest,
    )


class JobQueue:
    """Jobs in ``DATA/queue.sqlite``; opening it puts jobs left 'running' back in the queue."""

    def __init__(self, data_dir: str | Path, sync: str = "normal") -> None:
        self.path = Path(data_dir) / "queue.sqlite"
        self.sync = sync.upper()  # how accepting a job commits: FULL (synced) or NORMAL (see below)
        if self.sync not in ("FULL", "NORMAL"):
            raise ValueError(f"sync must be 'full' or 'normal', not {sync!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # An accepted job is in the database file (WAL) before the reply: a killed process cannot lose
        # it; ``sync="full"`` also syncs the disk, so it survives a power loss. State changes (claim,
        # finish, cancel...) only reach the file: after a power loss the worst case is a job run
        # again, as after a SIGKILL mid-job.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED:
            if name not in present:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")
        self.recovered = self._recover()

    def _recover(self) -> int:
        """Jobs a crash left 'running' run again from the start; returns how many."""
        with self._lock:
            cursor = self._db.execute("UPDATE jobs SET state='queued' WHERE state='running'")
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def submit(
        self,
        workflow: str,
        inputs: dict[str, Any],
        priority: int = 0,
        webhook: str | None = None,
        rerun_of: str | None = None,
    ) -> tuple[str, int]:
        """Store a new queued job (committed on return); returns its id and queue position (0 = next)."""
        return self.submit_many(workflow, [inputs], priority, webhook, rerun_of)[0]

    def submit_many(
        self,
        workflow: str,
        items: list[dict[str, Any]],
        priority: int = 0,
        webhook: str | None = None,
        rerun_of: str | None = None,
    ) -> list[tuple[str, int]]:
        """One queued job per input dict of ``items`` (a sweep), all committed in one transaction
        (one job: one statement)."""
        accepted = []
        synced = self.sync != "NORMAL"  # the connection's own setting is NORMAL
        several = len(items) > 1
        with self._lock:
            if synced:
                self._db.execute(f"PRAGMA synchronous={self.sync}")
            if several:
                self._db.execute("BEGIN IMMEDIATE")
            for inputs in items:
                job_id = uuid.uuid4().hex
                values = (job_id, priority, workflow, json.dumps(inputs), time.time(), webhook, rerun_of)
                [(seq,)] = self._db.execute(_INSERT, values).fetchall()  # all: the statement ends
                accepted.append((job_id, seq))
            if several:
                self._db.execute("COMMIT")
            if synced:
                self._db.execute("PRAGMA synchronous=NORMAL")
            return [(job_id, self._position(priority, seq)) for job_id, seq in accepted]

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
        """Mark the next queued job (highest priority, then oldest) running and return it, atomically
        (one statement); None when none is queued or the queue is paused."""
        with self._lock:
            rows = self._db.execute(_CLAIM, (time.time(),)).fetchall()  # all: the statement ends, commits
        return _job(rows[0]) if rows else None

    def requeue(self, job_id: str) -> None:
        """A running job goes back to the queue (the server stops mid-run); it runs again from the start."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state='queued' WHERE id=? AND state='running'", (job_id,))

    def cancelled(self, job_id: str) -> None:
        """A running job stopped by a cancel."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state='cancelled', ended=? WHERE id=? AND state='running'",
                (time.time(), job_id),
            )

    def _paused(self) -> bool:
        row = self._db.execute("SELECT value FROM meta WHERE key='paused'").fetchone()
        return bool(row and row[0] == "1")

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused()

    def pause(self, paused: bool = True) -> None:
        """Pause (or resume) the queue: a paused queue hands out no job; kept across restarts."""
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('paused', ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                ("1" if paused else "0",),
            )

    def active(self) -> dict[str, int]:
        """{queued, running: how many jobs, paused: 0 or 1}, in one query of index ranges (as quick
        with a long history)."""
        with self._lock:
            queued, running, paused = self._db.execute(_ACTIVE).fetchone()
        return {"queued": queued, "running": running, "paused": paused}

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in STATES} | dict(rows)

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False when it is not queued (running or done)."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE jobs SET state='cancelled', ended=? WHERE id=? AND state='queued'",
                (time.time(), job_id),
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
                "UPDATE jobs SET state='finished', report=?, outputs=?, error=NULL, ended=? WHERE id=?",
                (json.dumps(report, default=str), json.dumps(outputs), time.time(), job_id),
            )

    def fail(self, job_id: str, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state='failed', error=?, ended=? WHERE id=?", (error, time.time(), job_id)
            )
