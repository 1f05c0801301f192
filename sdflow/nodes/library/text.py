"""CLIPEncode: prompt text to conditioning."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.families import AESTHETIC_IDS, SIZE_IDS, SizeConditioning
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.clip_text import ClipSkipError, encode_text
from sdflow.nodes.types import Clip, Conditioning

_READERS = (("SDXL", SIZE_IDS), ("the SDXL refiner", AESTHETIC_IDS))
_SIZE_DOC = "(SDXL) {what} in pixels; null = the size of the picture being denoised (diffusers' default)"


class CLIPEncode(Node):
    """Encode a prompt with the checkpoint's text encoder(s) into conditioning for the UNet.

    SDXL's size conditioning (and the refiner's aesthetic score) are fields here, as in ComfyUI's
    SDXL text encoders: they belong to the prompt, so positive and negative can differ (diffusers'
    negative_original_size ...), and when left null they follow the picture DenoiseLoop draws.
    """

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}

    clip: Clip = Field(description="tokenizer(s) and text encoder(s), from LoadCheckpoint")
    text: str = Field("", description="the prompt; longer than 77 tokens is truncated")
    clip_skip: int = Field(
        0,
        ge=0,
        le=24,
        description=(
            "final layers to skip: 0 = the family's layer (SD 1.x/2.x the last, SDXL the penultimate), "
            "1 = one earlier (A1111 'clip skip 2')"
        ),
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
    aesthetic_score: float | None = Field(
        None,
        ge=0.0,
        le=10.0,
        description="(SDXL refiner) aesthetic score; null = 6.0 as positive, 2.5 as negative (diffusers)",
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        problems = []
        for size in ("original", "target"):
            width, height = constants.get(f"{size}_width"), constants.get(f"{size}_height")
            if (width is None) != (height is None):
                message = f"give {size}_width and {size}_height together (or neither)"
                problems.append((f"{size}_width" if width is None else f"{size}_height", message))
        return problems

    def run(self, ctx: RunContext) -> dict[str, Any]:
        family = self.clip.family
        self._check_sizes_apply(ctx)
        try:
            embeds, pooled = encode_text(self.clip.pairs, family, self.text, self.clip_skip)
        except ClipSkipError as exc:
            raise ctx.error(str(exc), "clip_skip") from None
        sizes = SizeConditioning(
            original_size=_pair(self.original_width, self.original_height),
            crop_top_left=(self.crop_left, self.crop_top),
            target_size=_pair(self.target_width, self.target_height),
            aesthetic_score=self.aesthetic_score,
        )
        return {"conditioning": Conditioning(embeds, family, pooled, sizes)}

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
        defaults = {"crop_left": 0, "crop_top": 0}
        for name, time_id in reads.items():
            if getattr(self, name) != defaults.get(name) and time_id not in family.time_ids:
                readers = [label for label, ids in _READERS if time_id in ids]
                raise ctx.error(
                    f"{name} is read by {' and '.join(readers)} only; this clip is {family}: leave it unset",
                    name,
                )


def _pair(width: int | None, height: int | None) -> tuple[int, int] | None:
    return None if width is None or height is None else (width, height)
