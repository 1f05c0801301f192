"""Checking a submitted job the way `sdflow validate` does, with errors as located JSON records."""

from __future__ import annotations

from typing import Any

from sdflow.errors import UserError
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import loads

WORKFLOW_FILE = "<workflow>"


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


def problems(workflow_text: str, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every error `sdflow validate` would report for this workflow and these inputs; [] when valid."""
    from sdflow.runner.core.plan import check

    try:
        workflow = loads(workflow_text, file=WORKFLOW_FILE)
        validate(workflow)
        check(workflow, inputs)
    except UserError as exc:
        return [error_record(e) for e in getattr(exc, "errors", [exc])]
    return []
