"""sdflow's exceptions: every user-facing error carries where it happened."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a workflow: file, 1-based line and column, node id and field (each optional)."""

    file: str | None = None
    line: int | None = None
    col: int | None = None
    node: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file or ("<workflow>" if self.line is not None else "")
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        parts = [where] if where else []
        if self.node is not None:
            parts.append(f"node '{self.node}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        return ", ".join(parts)


class SdflowError(Exception):
    """Base of every error sdflow raises on purpose."""


class UserError(SdflowError):
    """A mistake the user can fix (bad workflow, missing file, value out of range): exit code 2."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        self.message = message
        self.location = location or Location()
        where = str(self.location)
        super().__init__(f"{where}: {message}" if where else message)


class WorkflowError(UserError):
    """The workflow does not load or validate."""


class WorkflowErrors(UserError):
    """Several validation errors found in one pass; ``errors`` holds each one."""

    def __init__(self, errors: list[UserError]) -> None:
        self.errors = errors
        super().__init__(errors[0].message, errors[0].location)
        self.args = ("\n".join(str(e) for e in errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class NodeError(UserError):
    """A node refused its inputs while running (e.g. a missing image file)."""


class SdflowWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. prompt text dropped)."""


DEBUG_HINT = (
    "(this is a bug in sdflow or a library it uses; "
    "run again with --debug or SDFLOW_DEBUG=1 for the traceback)"
)


def internal_error(exc: BaseException) -> str:
    """A bug's one-line description: 'internal error while running node ID (TYPE): Type: first line'
    (the runner tags exceptions with the node that raised them)."""
    where = ""
    node = getattr(exc, "sdflow_node", None)
    if node is not None:
        where = f" while running node '{node[0]}' ({node[1]})"
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"internal error{where}: {detail}"


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped: one message, one line,
    whatever a user's value (quoted back in the message) contains."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def closest(name: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The most similar valid name, for 'did you mean' hints."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    if not matches:
        lowered = {c.lower(): c for c in choices}
        return lowered.get(name.lower())
    return matches[0]


def suggestion(name: str, choices: Iterable[str], otherwise: str = "") -> str:
    """ "; did you mean 'X'?" for the closest valid name, else ``otherwise`` (appended to messages)."""
    hint = closest(name, list(choices))
    return f"; did you mean '{hint}'?" if hint else otherwise
