"""The Node base class: typed input fields, declared outputs, one `run` method."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from sdflow.errors import Location, NodeError

CacheKind = Literal["output", "model"]


@dataclass
class RunContext:
    """What a running node may know of its surroundings: device, dtype, where to write, whom to tell."""

    device: torch.device
    dtype: torch.dtype
    node_id: str = "?"
    output_dir: str = "outputs"
    metadata: dict[str, str] = field(default_factory=dict)
    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    locate: Callable[[str | None], Location] | None = None

    def error(self, message: str, field: str | None = None) -> NodeError:
        """A NodeError located at this node (and field), to raise."""
        where = self.locate(field) if self.locate else Location(node=self.node_id, field=field)
        return NodeError(message, where)

    def step(self, index: int, total: int, latent: torch.Tensor) -> None:
        """Report one denoising step (index counts from 1)."""
        if self.on_step is not None:
            self.on_step(index, total, latent)


class Node(BaseModel):
    """Base of every node type. Subclasses declare fields, ``outputs`` and ``run``; they register
    themselves under ``type_name`` (the class name unless set)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", frozen=True)

    type_name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {}
    cache: ClassVar[CacheKind] = "output"
    is_output: ClassVar[bool] = False
    # String fields naming input files: the runner makes relative ones absolute against the
    # workflow file's folder before prechecks, cache keys and run (and expands '~').
    path_fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        if not cls.__dict__.get("abstract", False):
            from sdflow.nodes.registry import register

            register(cls)

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        """A digest of anything outside the graph this node reads (file content...), for cache keys."""
        return None

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        """Cheap checks of constants before anything runs (a file exists...): (field, message) pairs."""
        return []

    @classmethod
    def run_batch(cls, nodes: list[Node], ctx: RunContext) -> list[dict[str, Any]] | None:
        """Run several instances of this type as one batch, returning each one's outputs exactly as
        its own ``run`` would; None when they cannot share a batch (the runner then runs each)."""
        return None

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring: the node's user-facing help."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def run(self, ctx: RunContext) -> dict[str, Any]:
        """Do the work; return one value per declared output."""
        raise NotImplementedError
