"""What a node class's input fields accept: link-only port types, constants with ranges."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Annotated, Any

from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

from sdflow.errors import suggestion
from sdflow.nodes.base import Node
from sdflow.nodes.types import Port

MAX_SEED = 2**63 - 1
# Beyond this, several diffusers schedulers index past the 1000 training timesteps or divide by
# zero (DDIM, DDPM and PNDM at 1000 steps; LMS, DPM-Solver++ and UniPC at 999): far more steps
# than any sampler gains from.
MAX_STEPS = 500

_STRICT = ConfigDict(strict=True, arbitrary_types_allowed=True)


@dataclass(frozen=True)
class FieldSpec:
    """One input field of a node type."""

    name: str
    annotation: Any
    required: bool
    default: Any
    description: str
    accepted: tuple[type, ...]  # non-None types a link may carry into this field
    optional: bool  # None is allowed
    adapter: TypeAdapter | None  # None for port fields, which take links only

    @cached_property  # asked for every field of every node each time a workflow is planned
    def is_port(self) -> bool:
        """Port-typed fields take links only; they have no constant form."""
        return any(issubclass(t, Port) for t in self.accepted if isinstance(t, type))

    def accepts(self, output_type: type) -> bool:
        """Whether a link carrying ``output_type`` fits this field."""
        return any(isinstance(t, type) and issubclass(output_type, t) for t in self.accepted)

    def validate(self, value: Any) -> Any:
        """The validated constant; raises ValueError with pydantic's wording."""
        if self.adapter is None:
            if (value is None and self.optional) or any(isinstance(value, t) for t in self.accepted):
                return value
            raise ValueError(f"expected {type_label(self.annotation)}, got {type(value).__name__}")
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            choices = literal_choices(self.annotation)
            if isinstance(value, str) and choices and value not in choices:
                raise ValueError(_not_a_choice(value, choices)) from None
            raise ValueError(_first_message(exc)) from None

    def constraints(self) -> str:
        """Ranges and choices as text, e.g. '>= 1', 'multiple of 8', 'one of ddim, euler'."""
        parts = []
        for meta in _metadata_of(self.annotation):
            for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
                if getattr(meta, attr, None) is not None:
                    parts.append(f"{sym} {getattr(meta, attr)}")
            if getattr(meta, "multiple_of", None) is not None:
                parts.append(f"multiple of {meta.multiple_of}")
        choices = literal_choices(self.annotation)
        if choices:
            parts.append("one of " + ", ".join(map(str, choices)))
        return ", ".join(parts)


def _metadata_of(annotation: Any) -> list[Any]:
    return list(getattr(annotation, "__metadata__", ()))


def _strip(annotation: Any) -> Any:
    """The bare type inside Annotated[...]."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal[...] annotation (possibly inside Optional), else ()."""
    for member in _members(_strip(annotation)):
        if typing.get_origin(member) is typing.Literal:
            return typing.get_args(member)
    return ()


def _members(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (each without its Annotated constraints), or the one type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(_strip(member) for member in typing.get_args(annotation))
    return (annotation,)


def _link_type(member: Any) -> Any:
    if typing.get_origin(member) is typing.Literal:
        return type(typing.get_args(member)[0])
    return typing.get_origin(member) or member


def type_label(annotation: Any) -> str:
    """A short readable name for a field's type, e.g. 'int', 'Latent | None', "'ddim' | 'euler'"."""
    annotation = _strip(annotation)
    labels = []
    for member in _members(annotation):
        if member is type(None):
            labels.append("None")
        elif typing.get_origin(member) is typing.Literal:
            labels.append(" | ".join(repr(v) for v in typing.get_args(member)))
        elif typing.get_args(member):  # a generic such as list[str]
            labels.append(str(member))
        else:
            labels.append(getattr(member, "__name__", str(member)))
    return " | ".join(labels)


def _not_a_choice(value: str, choices: tuple[Any, ...]) -> str:
    """'eulr' is not one of ...; did you mean 'euler'?"""
    names = [str(c) for c in choices]
    return f"{value!r} is not one of {', '.join(names)}{suggestion(value, names)}"


def _first_message(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return str(error["msg"])


@cache
def fields_of(cls: type[Node]) -> dict[str, FieldSpec]:
    """Every input field of a node class, in declaration order."""
    specs = {}
    hints = typing.get_type_hints(cls, include_extras=True)
    for name, info in cls.model_fields.items():
        annotation = hints.get(name, info.annotation)
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        members = _members(_strip(annotation))
        optional = type(None) in members
        accepted = tuple(_link_type(m) for m in members if m is not type(None))
        required = info.is_required()
        default = None if info.default is PydanticUndefined else info.default
        is_port = any(isinstance(t, type) and issubclass(t, Port) for t in accepted)
        specs[name] = FieldSpec(
            name=name,
            annotation=annotation,
            required=required,
            default=default,
            description=info.description or "",
            accepted=accepted,
            optional=optional,
            adapter=None if is_port else TypeAdapter(annotation, config=_STRICT),
        )
    return specs
