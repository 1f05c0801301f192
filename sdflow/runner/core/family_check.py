"""Model families followed along the links before anything runs, so SD 1.x conditioning never reaches
an SDXL model (or the reverse) only to fail after the checkpoints have loaded.

Each node says, through ``Node.families``, which family its outputs carry (LoadCheckpoint from its
checkpoint's configs or header, CLIPEncode its clip's...) and, through ``Node.same_family``, which
inputs must agree. A family that cannot be known cheaply is None and checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sdflow.errors import UserError, WorkflowError
from sdflow.graphs.model import Link, Workflow
from sdflow.models.families import Family
from sdflow.nodes.base import Node


class PlannedNode(Protocol):
    """What the check reads of a planned node (the runner's steps)."""

    id: str
    cls: type[Node]
    constants: dict[str, Any]
    links: dict[str, Link]


@dataclass(frozen=True)
class _Known:
    family: Family
    origin: str  # the node whose constants decided it (a LoadCheckpoint)


def family_errors(
    workflow: Workflow, steps: Sequence[PlannedNode], output_name: Callable[[Link], str]
) -> list[UserError]:
    """One located error per node whose ``same_family`` inputs are of different families; ``steps``
    in topological order, ``output_name`` names the output a link reads."""
    known: dict[tuple[str, str], _Known] = {}
    errors: list[UserError] = []
    for step in steps:
        inputs = {name: known.get((link.node, output_name(link))) for name, link in step.links.items()}
        conflict = _conflict(step.cls, inputs)
        if conflict is not None:
            field, message = conflict
            errors.append(WorkflowError(message, workflow.nodes[step.id].location(field)))
            continue  # its outputs stay unknown: one message per mistake
        families = {name: k.family if k else None for name, k in inputs.items()}
        for output, family in step.cls.families(step.constants, families).items():
            if family is not None:
                passed = next((k for k in inputs.values() if k and k.family == family), None)
                known[(step.id, output)] = passed or _Known(family, step.id)
    return errors


def _conflict(cls: type[Node], inputs: dict[str, _Known | None]) -> tuple[str, str] | None:
    """(field, message) for the first ``same_family`` input whose family differs from the first
    known one, or None."""
    first: tuple[str, _Known] | None = None
    for name in cls.same_family:
        current = inputs.get(name)
        if current is None:
            continue
        if first is None:
            first = (name, current)
        elif current.family != first[1].family:
            together = ", ".join(cls.same_family[:-1]) + " and " + cls.same_family[-1]
            return name, (
                f"'{name}' is {current.family} (from node '{current.origin}') but '{first[0]}' is "
                f"{first[1].family} (from node '{first[1].origin}'): {together} must come from "
                "checkpoints of one model family"
            )
    return None
