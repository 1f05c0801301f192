"""LoadTextEncoders: SD3's or Flux's text encoders from their own files (ComfyUI's Dual/TripleCLIPLoader)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models import resolver, split_load
from sdflow.models.families import FAMILIES, Family
from sdflow.models.folders import ModelNotFound
from sdflow.models.module_fill import ArchitectureMismatch
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.model_files import content_fingerprint
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Clip

KIND = "text_encoders"


class LoadTextEncoders(Node):
    """Load text encoder files (clip_l, clip_g, t5xxl) as one Clip for SD3 or Flux."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"clip": Clip}
    cache: ClassVar[str] = "model"

    files: list[str] = Field(
        min_length=1,
        max_length=3,
        description=(
            "the encoder files, any order (each told by its keys): Flux clip_l + t5xxl, SD3 clip_l + "
            "clip_g + t5xxl; paths or names in the model folders' text_encoders (clip) folders"
        ),
    )
    kind: Literal["sd3", "flux"] = Field("flux", description="the family whose encoders these are")
    config: str = Field(
        "",
        description=(
            "a diffusers folder (or 'builtin:NAME') with the encoders' configs and tokenizers; empty: "
            "the full-size configs shipped with sdflow (T5's tokenizer then from t5_tokenizer/ beside it)"
        ),
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        parts = []
        for spec in constants["files"]:
            try:
                parts.append(content_fingerprint(resolver.resolve(KIND, spec)))
            except (ModelNotFound, OSError):
                parts.append("missing:" + spec)
        return ":".join(parts)

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        for spec in constants["files"]:
            try:
                resolver.resolve(KIND, spec)
            except ModelNotFound as exc:
                return [("files", str(exc))]
        return []

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        return {"clip": FAMILIES[constants.get("kind", "flux")]}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        family = FAMILIES[self.kind]
        try:
            paths = [resolver.resolve(KIND, spec) for spec in self.files]
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "files") from None
        try:
            config = resolver.config_folder(self.config) if self.config else None
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "config") from None
        try:
            encoders, tokenizers = split_load.load_text_encoders(paths, family, ctx.device, ctx.dtype, config)
        except (split_load.SplitLoadError, ArchitectureMismatch, OSError, ValueError) as exc:
            raise ctx.error(str(exc), "files") from None
        pairs = [value for pair in zip(tokenizers, encoders, strict=True) for value in pair]
        return {"clip": Clip(pairs[0], pairs[1], family, *pairs[2:])}
