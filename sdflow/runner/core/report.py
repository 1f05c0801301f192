"""The run report: per node, whether it ran or came from cache, and how long it took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class NodeRecord:
    id: str
    type: str
    status: str  # "ran" | "cached"
    seconds: float
    batch: int = 1  # items of a batched sweep this one run served (seconds are the whole batch's)


@dataclass
class RunReport:
    inputs: dict[str, Any] = field(default_factory=dict)
    nodes: list[NodeRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    saved: dict[str, list[str]] = field(default_factory=dict)  # output node id -> the files it wrote
    warnings: list[str] = field(default_factory=list)  # what nodes warned about (text dropped...)
    seconds: float = 0.0

    def status(self) -> dict[str, str]:
        """{node id: 'ran' | 'cached'}."""
        return {n.id: n.status for n in self.nodes}

    def ran(self) -> list[str]:
        return [n.id for n in self.nodes if n.status == "ran"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
