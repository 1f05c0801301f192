"""Option helpers every command shares: workflow inputs from NAME=VALUE text, sweeps, output folders."""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

import yaml

from sdflow.errors import Location, UserError, WorkflowError, suggestion
from sdflow.graphs.model import Workflow

EXIT_OK, EXIT_FAILED, EXIT_USER = 0, 1, 2
ALLOW_PICKLE_HELP = "load .ckpt/.pt/.bin/.pth pickle weight files (they can run code; read weights-only)"


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set NAME=VALUE`` option every command that takes workflow inputs has."""
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=help)


def writable_folder(folder: Path, option: str) -> None:
    """Refuse, before anything runs, a folder that cannot be made or written (a file is in the way...)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option}: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: no permission to write in '{existing}'")


def parse_assignment(workflow: Workflow, text: str) -> tuple[str, Any]:
    """'NAME=VALUE' -> (name, value typed as the workflow input declares)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise UserError(f"--set {text}: expected NAME=VALUE", Location(workflow.file))
    return name, checked(workflow, name, coerce(workflow, name, raw), f"--set {text}")


def checked(workflow: Workflow, name: str, value: Any, option: str) -> Any:
    """``value`` if workflow input ``name`` exists and takes it; else a UserError naming ``option``."""
    spec = workflow.inputs.get(name)
    if spec is None:
        more = suggestion(name, workflow.inputs, f" (inputs: {', '.join(workflow.inputs) or 'none'})")
        raise WorkflowError(f"{option}: the workflow has no input '{name}'{more}", Location(workflow.file))
    try:
        return spec.check(value)
    except ValueError as exc:
        raise WorkflowError(f"{option}: {exc}", spec.loc or Location(workflow.file)) from None


def coerce(workflow: Workflow, name: str, raw: str) -> Any:
    """A command-line string as the type of input ``name`` (strings stay verbatim)."""
    spec = workflow.inputs.get(name)
    if spec is not None and spec.type == "str":
        return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def sweep_combinations(workflow: Workflow, sweeps: list[str]) -> list[dict[str, Any]]:
    """Every combination of the swept values (one empty combination when nothing is swept)."""
    axes = []
    for text in sweeps:
        name, sep, raw = text.partition("=")
        if not sep or not name or not raw:
            raise UserError(f"--sweep {text}: expected NAME=V1,V2,...", Location(workflow.file))
        values = [v.replace("\\,", ",") for v in _split_commas(raw)]
        option = f"--sweep {text}"
        axes.append([(name, checked(workflow, name, coerce(workflow, name, v), option)) for v in values])
    return [dict(choice) for choice in itertools.product(*axes)]


def _split_commas(raw: str) -> list[str]:
    """Split on commas not preceded by a backslash."""
    parts, current, escaped = [], "", False
    for char in raw:
        if char == "," and not escaped:
            parts.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    return [*parts, current]
