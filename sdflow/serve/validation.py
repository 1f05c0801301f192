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
# text digest -> the parsed workflow (pickled) and its Shape once it validated
_PARSED: collections.OrderedDict[bytes, list[Any]] = collections.OrderedDict()
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
    return _loaded(workflow_text, base_dir)[0]


def known(workflow_text: str) -> bool:
    """Whether ``workflow_text`` was parsed and its graph checked already (checking a job of it
    again takes well under a millisecond: no YAML parse, no graph check)."""
    with _PARSED_LOCK:
        kept = _PARSED.get(_digest(workflow_text))
    return kept is not None and kept[1] is not None


def _digest(workflow_text: str) -> bytes:
    return hashlib.sha256(workflow_text.encode("utf-8", "surrogatepass")).digest()


def _loaded(workflow_text: str, base_dir: str | Path | None) -> tuple[Workflow, list[Any]]:
    """The workflow (a fresh copy) and its kept entry [pickle, Shape or None]."""
    key = _digest(workflow_text)
    with _PARSED_LOCK:
        kept = _PARSED.get(key)
        if kept is not None:
            _PARSED.move_to_end(key)
    if kept is None:
        kept = [pickle.dumps(loads(workflow_text, file=WORKFLOW_FILE)), None]
        with _PARSED_LOCK:
            _PARSED[key] = kept
            while len(_PARSED) > PARSED_KEPT:
                _PARSED.popitem(last=False)
    workflow = pickle.loads(kept[0])
    if base_dir is not None:
        workflow.base_dir = str(base_dir)
    return workflow, kept


def check_job(
    workflow_text: str,
    inputs: dict[str, Any],
    sandbox: Sandbox | None = None,
    base_dir: str | Path | None = None,
    allow_pickle: bool = False,
) -> tuple[CheckedPlan | None, list[dict[str, Any]]]:
    """(the checked plan, []) when the workflow and inputs pass `sdflow validate`, else (None, every
    error it would report). ``sandbox`` keeps the files it names to the server's folders; the plan
    runs with ``Runner.run_checked`` (no second validation when the job runs). The graph checks,
    which depend on the text alone, are done once per text (``Shape``); the input values, the
    constants and the file prechecks are checked for every job."""
    from sdflow.runner.core.plan import checked, shape_of

    try:
        workflow, kept = _loaded(workflow_text, base_dir)
        if kept[1] is None:
            kept[1] = shape_of(workflow)
        plan = checked(workflow, inputs, allow_pickle=allow_pickle, sandbox=sandbox, shape=kept[1])
    except UserError as exc:
        return None, [error_record(e) for e in getattr(exc, "errors", [exc])]
    return plan, []
