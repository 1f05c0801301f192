"""The Node base class: typed input fields, declared outputs, one `run` method."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from sdflow.errors import Location, NodeError, SdflowWarning
from sdflow.files import write_new
from sdflow.nodes.scope import RunScope

if TYPE_CHECKING:
    from sdflow.models.families import Family

# write_new's signature: (folder, stem, suffix, write the content) -> the path written
FileWriter = Callable[[Path | str, str, str, Callable[[BinaryIO], None]], Path]

CacheKind = Literal["output", "model"]


@dataclass
class RunContext:
    """What a running node may know of its surroundings: device, dtype, where to write, whom to tell."""

    device: torch.device
    dtype: torch.dtype
    node_id: str = "?"
    output_dir: str = "outputs"
    metadata: dict[str, str] = field(default_factory=dict)
    # For an output node behind a plain txt2img / img2img: prompt, sampler, seed... (A1111's
    # "parameters" text is made from it; see sdflow/interop/a1111.py).
    generation: dict[str, Any] | None = None
    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    locate: Callable[[str | None], Location] | None = None
    allow_pickle: bool = False  # the runner-wide opt-in to pickle weight files (--allow-pickle)
    on_warning: Callable[[str], None] | None = None
    # How output nodes write new files; a Ray worker swaps in one that hands the bytes to the driver.
    write_new: FileWriter = write_new
    # What this run's hooks and nodes share (model-folder listings...); the runner makes one per run.
    scope: RunScope = field(default_factory=RunScope)

    def error(self, message: str, field: str | None = None) -> NodeError:
        """A NodeError located at this node (and field), to raise."""
        return NodeError(message, self._where(field))

    def warn(self, message: str, field: str | None = None) -> None:
        """Tell the user something went wrong without stopping (text dropped...): a runner event the
        CLI prints, or a Python warning when nobody listens."""
        text = f"{self._where(field)}: {message}"
        if self.on_warning is not None:
            self.on_warning(text)
        else:
            warnings.warn(text, SdflowWarning, stacklevel=2)

    def _where(self, field: str | None) -> Location:
        return self.locate(field) if self.locate else Location(node=self.node_id, field=field)

    def step(self, index: int, total: int, latent: torch.Tensor) -> None:
        """Report one denoising step (index counts from 1)."""
        if self.on_step is not None:
            self.on_step(index, total, latent)


@dataclass(frozen=True)
class Absent:
    """An output a node does not have this time (LoadCheckpoint's clip_vision for a checkpoint without
    one): a node linked to it stops with ``reason``, located at its field."""

    reason: str


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
    # Path fields that may instead name a model in the model folders of a kind (field -> kind, e.g.
    # "loras"): made absolute only when that path exists next to the workflow, else kept as a name.
    folder_kinds: ClassVar[dict[str, str]] = {}
    # Model families, followed along the links before anything runs (see ``families``): each output
    # named here carries the family of that input field (CLIPEncode: {"conditioning": "clip"}) ...
    family_from: ClassVar[dict[str, str]] = {}
    # ... and these linked inputs must be of one family (DenoiseLoop: model, positive, negative).
    same_family: ClassVar[tuple[str, ...]] = ()
    # True for a node that repeats one computation many times (DenoiseLoop's steps): on the CPU the
    # runner lets it reuse freed large blocks between repetitions (runner/host_memory.py).
    repeats: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        if not cls.__dict__.get("abstract", False):
            register(cls)

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        """A digest of anything outside the graph this node reads (file content...), for cache keys;
        ``ctx.scope`` is the run's scope, shared with ``precheck``."""
        return None

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        """Cheap checks of constants before anything runs (a file exists...): (field, message) pairs;
        ``scope`` is the run's, shared with ``fingerprint`` (each model folder is listed once in it)."""
        return []

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        """The model family of each output known without running (None or absent: unknown), from the
        constants and the families of the linked inputs (None: unknown); must stay cheap."""
        return {output: inputs.get(source) for output, source in cls.family_from.items()}

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


REGISTERED: dict[str, type[Node]] = {}


def register(cls: type[Node]) -> None:
    """Add a node class; a second class with the same type name is a programming error."""
    existing = REGISTERED.get(cls.type_name)
    same_place = existing is not None and (existing.__module__, existing.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )
    if existing is not None and existing is not cls and not same_place:
        raise TypeError(f"node type '{cls.type_name}' is defined twice: {existing} and {cls}")
    REGISTERED[cls.type_name] = cls
