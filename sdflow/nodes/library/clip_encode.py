"""CLIPEncode: prompt text (weights, BREAK, long prompts, embeddings) to conditioning, any family."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.families import AESTHETIC_IDS, SIZE_IDS, SizeConditioning
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.clip_text import ClipSkipError, check_clip_skip
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Clip, Conditioning
from sdflow.prompts import embeddings
from sdflow.prompts.chunks import PromptError, overflow
from sdflow.prompts.encode import embedding_slot
from sdflow.prompts.joint import encode_family
from sdflow.prompts.parse import parse
from sdflow.prompts.weighting import Weighting

_READERS = (("SDXL", SIZE_IDS), ("the SDXL refiner", AESTHETIC_IDS))
_SIZE_DOC = "(SDXL) {what} in pixels; null = the size of the picture being denoised (diffusers' default)"


class CLIPEncode(Node):
    """Encode a prompt (weights, BREAK, embeddings, any length) with the checkpoint's text encoder(s).

    The prompt syntax is A1111's and ComfyUI's (docs/prompts.md), the same on both SDXL encoders.
    SDXL's size conditioning (and the refiner's aesthetic score) are fields here, as in ComfyUI's
    SDXL text encoders: they belong to the prompt, so positive and negative can differ (diffusers'
    negative_original_size ...), and when left null they follow the picture DenoiseLoop draws.
    """

    version: ClassVar[int] = 3
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "clip"}

    clip: Clip = Field(description="tokenizer(s) and text encoder(s), from LoadCheckpoint")
    text: str | list[str] = Field(
        "",
        description="the prompt: (word:1.3), (word), [word], BREAK, embedding:NAME; a list makes a batch",
    )
    clip_skip: int = Field(
        0,
        ge=0,
        le=24,
        description=(
            "final layers to skip: 0 = the family's layer (SD 1.x/2.x the last, SDXL the penultimate), "
            "1 = one earlier (A1111 'clip skip 2')"
        ),
    )
    weighting: Weighting = Field(
        "comfy",
        description="comfy: move weighted tokens from the empty prompt's; a1111: scale, keep the mean",
    )
    truncate: bool = Field(
        False, description="keep only the first 75 tokens (a warning tells what is dropped)"
    )
    allow_pickle: bool = Field(
        False, description="load pickled embeddings (.pt, .bin): only for files you trust"
    )
    original_width: int | None = Field(
        None, ge=8, le=16384, description=_SIZE_DOC.format(what="original width")
    )
    original_height: int | None = Field(
        None, ge=8, le=16384, description=_SIZE_DOC.format(what="original height")
    )
    crop_left: int = Field(0, ge=0, le=16384, description="(SDXL) crop coordinate left, in pixels")
    crop_top: int = Field(0, ge=0, le=16384, description="(SDXL) crop coordinate top, in pixels")
    target_width: int | None = Field(
        None, ge=8, le=16384, description=_SIZE_DOC.format(what="target width (base only)")
    )
    target_height: int | None = Field(
        None, ge=8, le=16384, description=_SIZE_DOC.format(what="target height (base only)")
    )
    t5_text: str | list[str] | None = Field(
        None,
        description="(SD3, Flux) what the T5 encoder reads instead of text's words (ComfyUI's t5xxl prompt)",
    )
    clip_g_text: str | list[str] | None = Field(
        None,
        description="(SD3) what the CLIP-G encoder reads instead of text (ComfyUI's clip_g prompt)",
    )
    t5_length: int | None = Field(
        None,
        ge=1,
        le=512,
        description="(SD3, Flux) T5 tokens; null = diffusers' default (SD3 256, Flux 512)",
    )
    aesthetic_score: float | None = Field(
        None,
        ge=0.0,
        le=10.0,
        description="(SDXL refiner) aesthetic score; null = 6.0 as positive, 2.5 as negative (diffusers)",
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        return embeddings.fingerprint("\n".join(_prompts(constants.get("text", ""))))

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        problems = []
        for size in ("original", "target"):
            width, height = constants.get(f"{size}_width"), constants.get(f"{size}_height")
            if (width is None) != (height is None):
                message = f"give {size}_width and {size}_height together (or neither)"
                problems.append((f"{size}_width" if width is None else f"{size}_height", message))
        text = "\n".join(_prompts(constants.get("text", "")))
        problems += [("text", p) for p in embeddings.check(text, bool(constants.get("allow_pickle")))]
        return problems

    def run(self, ctx: RunContext) -> dict[str, Any]:
        family = self.clip.family
        self._check_sizes_apply(ctx)
        try:
            for slot, (_, encoder) in zip(family.encoders, self.clip.pairs, strict=False):
                if slot.skippable:  # CLIP (T5 always gives its last layer)
                    check_clip_skip(encoder, family, self.clip_skip)
        except ClipSkipError as exc:
            raise ctx.error(str(exc), "clip_skip") from None
        library = embeddings.Library(self.allow_pickle)
        prompts = [parse(text) for text in _prompts(self.text)]
        try:
            if self.truncate:
                tokenizer, encoder = self.clip.pairs[0]
                vectors = library.vectors_for(*embedding_slot(encoder))
                for dropped in filter(None, (overflow(p, tokenizer, vectors) for p in prompts)):
                    ctx.warn(f"truncate: {dropped}", "text")
            max_chunks = 1 if self.truncate else None
            t5_texts = None if self.t5_text is None else _prompts(self.t5_text)
            if t5_texts is not None and len(t5_texts) != len(prompts):
                raise ctx.error(f"t5_text has {len(t5_texts)} prompts, text {len(prompts)}", "t5_text")
            clip_g = None if self.clip_g_text is None else [parse(t) for t in _prompts(self.clip_g_text)]
            if clip_g is not None and len(clip_g) != len(prompts):
                raise ctx.error(f"clip_g_text has {len(clip_g)} prompts, text {len(prompts)}", "clip_g_text")
            encoded = encode_family(
                family,
                self.clip.pairs,
                prompts,
                self.clip_skip,
                self.weighting,
                library.vectors_for,
                max_chunks,
                t5_texts,
                self.t5_length,
                clip_g,
            )
        except PromptError as exc:
            raise ctx.error(str(exc), "text") from None
        sizes = SizeConditioning(
            original_size=_pair(self.original_width, self.original_height),
            crop_top_left=(self.crop_left, self.crop_top),
            target_size=_pair(self.target_width, self.target_height),
            aesthetic_score=self.aesthetic_score,
        )
        conditioning = Conditioning(encoded.hidden, family, encoded.pooled, sizes, encoded.empty)
        return {"conditioning": conditioning}

    def _check_sizes_apply(self, ctx: RunContext) -> None:
        """Refuse size fields the clip's family does not read (instead of silently ignoring them)."""
        family = self.clip.family
        reads = {
            "original_width": "original_size",
            "original_height": "original_size",
            "crop_left": "crops_coords_top_left",
            "crop_top": "crops_coords_top_left",
            "target_width": "target_size",
            "target_height": "target_size",
            "aesthetic_score": "aesthetic_score",
        }
        for name in ("t5_text", "t5_length"):
            if getattr(self, name) is not None and not family.t5:
                raise ctx.error(
                    f"{name} is read by SD3 and Flux only; this clip is {family}: leave it unset", name
                )
        if self.clip_g_text is not None and getattr(getattr(family, "text", None), "clip_g", None) is None:
            raise ctx.error(
                f"clip_g_text is read by SD3 only; this clip is {family}: leave it unset", "clip_g_text"
            )
        defaults = {"crop_left": 0, "crop_top": 0}
        for name, time_id in reads.items():
            if getattr(self, name) != defaults.get(name) and time_id not in family.time_ids:
                readers = [label for label, ids in _READERS if time_id in ids]
                raise ctx.error(
                    f"{name} is read by {' and '.join(readers)} only; this clip is {family}: leave it unset",
                    name,
                )


def _prompts(text: str | list[str]) -> list[str]:
    return [text] if isinstance(text, str) else list(text) or [""]


def _pair(width: int | None, height: int | None) -> tuple[int, int] | None:
    return None if width is None or height is None else (width, height)
