"""Checking a submitted job the way `sdflow validate` does, with errors as located JSON records."""

from __future__ import annotations

import collections
import hashlib
import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdflow.errors import UserError
from sdflow.graphs.model import Workflow
from sdflow.graphs.yaml_io import loads
from sdflow.models.access import Sandbox

if TYPE_CHECKING:
    from sdflow.runner.core.plan import CheckedPlan

WORKFLOW_FILE = "<workflow>"
PARSED_KEPT = 64
_PARSED: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()  # text digest -> pickle
_PARSED_LOCK = threading.Lock()


def error_record(error: UserError) -> dict[str, Any]:
    """One error as {file, line, column, node, field, message}."""
    where = error.location
    return {
        "file": where.file,
        "line": where.line,
        "column": where.col,
        "node": where.node,
        "field": where.field,
        "message": error.message,
    }


def load_job(workflow_text: str, base_dir: str | Path | None = None) -> Workflow:
    """A job's workflow (a fresh copy); its relative file paths resolve against ``base_dir`` (the
    server's input folder). Clients send the same text again and again: the parse is kept, pickled
    (a copy costs ~0.1 ms, parsing the YAML ~30)."""
    key = hashlib.sha256(workflow_text.encode("utf-8", "surrogatepass")).digest()
    with _PARSED_LOCK:
        kept = _PARSED.get(key)
        if kept is not None:
            _PARSED.move_to_end(key)
    if kept is None:
        kept = pickle.dumps(loads(workflow_text, file=WORKFLOW_FILE))
        with _PARSED_LOCK:
            _PARSED[key] = kept
            while len(_PARSED) > PARSED_KEPT:
                _PARSED.popitem(last=False)
    workflow = pickle.loads(kept)
    if base_dir is not None:
        workflow.base_dir = str(base_dir)
    return workflow


def check_job(
    workflow_text: str,
    inputs: dict[str, Any],
    sandbox: Sandbox | None = None,
    base_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> tuple[CheckedPlan | None, list[dict[str, Any]]]:
    """(the checked plan, []) when the workflow and inputs pass `sdflow validate`, else (None, every
    error it would report). ``sandbox`` keeps the files it names to the server's folders; the plan
    runs with ``Runner.run_checked`` (no second validation when the job runs)."""
    from sdflow.runner.core.plan import checked

    try:
        return checked(
            load_job(workflow_text, base_dir), inputs, allow_pickle=allow_pickle, sandbox=sandbox
        ), []
    except UserError as exc:
        return None, [error_record(e) for e in getattr(exc, "errors", [exc])]
