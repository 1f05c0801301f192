"""GLIGENTextBoxApply: a phrase drawn inside a box, through a GLIGEN; the box rides on the conditioning."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.library.conditioning_area import MAX_SIZE, each
from sdflow.nodes.types import VAE_SCALE, Clip, Conditioning
from sdflow.nodes.types_grounding import Gligen, GroundingBox
from sdflow.prompts.encode import encode
from sdflow.prompts.parse import parse


class GLIGENTextBoxApply(Node):
    """Draw a phrase inside a box (pixels) of the picture, through a GLIGEN; chain for more boxes.

    The phrase's pooled CLIP embedding and its box travel with the conditioning; DenoiseLoop adds the
    GLIGEN's gated layers to the UNet for the loop and feeds every box of each side to them, as
    ComfyUI's GLIGENTextBoxApply and diffusers' StableDiffusionGLIGENPipeline (gligen_phrases,
    gligen_boxes) do. Defaults follow ComfyUI: the boxes act on every step and the negative is drawn
    without the gated layers; ``scheduled_sampling_beta: 0.3, unboxed: empty`` draws as the diffusers
    pipeline's defaults."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning"}
    same_family: ClassVar[tuple[str, ...]] = ("conditioning", "clip", "gligen")

    conditioning: Conditioning = Field(
        description="the conditioning to draw with (ComfyUI's conditioning_to)"
    )
    clip: Clip = Field(description="the text encoder that encodes the phrase (the checkpoint's clip)")
    gligen: Gligen = Field(description="from LoadGLIGEN")
    text: str = Field(description="the phrase drawn in the box (best: an object the prompt names)")
    width: int = Field(64, ge=VAE_SCALE, le=MAX_SIZE, multiple_of=VAE_SCALE, description="box width, pixels")
    height: int = Field(
        64, ge=VAE_SCALE, le=MAX_SIZE, multiple_of=VAE_SCALE, description="box height, pixels"
    )
    x: int = Field(0, ge=0, le=MAX_SIZE, multiple_of=VAE_SCALE, description="the box's left edge, pixels")
    y: int = Field(0, ge=0, le=MAX_SIZE, multiple_of=VAE_SCALE, description="the box's top edge, pixels")
    scheduled_sampling_beta: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description=(
            "the fraction of the steps, from the first, the box acts on (diffusers' "
            "gligen_scheduled_sampling_beta, 0.3 in its pipeline; 1 = every step, as ComfyUI)"
        ),
    )
    unboxed: Literal["plain", "empty"] = Field(
        "plain",
        description=(
            "how DenoiseLoop draws a conditioning without boxes (the negative): 'plain' without the "
            "gated layers, as ComfyUI; 'empty' through them with no objects (all null), as the diffusers "
            "pipeline"
        ),
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        weights = self.gligen.weights
        clip = self.clip
        if len(clip.pairs) != 1 or clip.family.pooled:
            raise ctx.error(
                f"GLIGEN fits SD 1.x/2.x, not {clip.family}: use an SD 1.x/2.x checkpoint", "clip"
            )
        width = int(clip.text_encoder.config.hidden_size)
        if width != weights.phrase_width:
            raise ctx.error(
                f"this GLIGEN reads phrases {weights.phrase_width} wide but this clip's text encoder gives "
                f"{width} ({clip.family}): load the GLIGEN made for the checkpoint's family",
                "gligen",
            )
        for earlier in self.conditioning.boxes:
            if earlier.gligen.weights is not weights:
                raise ctx.error(
                    "this conditioning already has boxes of another GLIGEN: use one GLIGEN", "gligen"
                )
            if earlier.unboxed != self.unboxed:
                raise ctx.error(
                    f"this conditioning's earlier boxes say unboxed '{earlier.unboxed}': give every box "
                    "one value",
                    "unboxed",
                )
        box = GroundingBox(
            self.gligen,
            self._phrase(ctx),
            (self.x // VAE_SCALE, self.y // VAE_SCALE, self.width // VAE_SCALE, self.height // VAE_SCALE),
            self.scheduled_sampling_beta,
            self.unboxed,
        )
        return {
            "conditioning": each(self.conditioning, lambda piece: replace(piece, boxes=(*piece.boxes, box)))
        }

    def _phrase(self, ctx: RunContext) -> torch.Tensor:
        """The phrase's pooled (unprojected) text embedding, (width,): the end token's final state."""
        try:
            encoded = encode(
                self.clip.tokenizer, self.clip.text_encoder, parse(self.text), pooler=True, max_chunks=1
            )
        except LookupError as exc:
            raise ctx.error(f"{exc}: a GLIGEN phrase reads no embeddings", "text") from None
        assert encoded.pooled is not None
        return encoded.pooled[0]
