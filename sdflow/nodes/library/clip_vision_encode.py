"""CLIPVisionEncode: a picture through a CLIP vision model, for unCLIPConditioning (and revision)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models import clip_vision
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image
from sdflow.nodes.types_vision import ClipVision, ClipVisionOutput


class CLIPVisionEncode(Node):
    """Encode a picture with a CLIP vision model: image embeds, penultimate and last hidden states."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"clip_vision_output": ClipVisionOutput}

    clip_vision: ClipVision = Field(description="from LoadCLIPVision (or an unCLIP checkpoint)")
    image: Image = Field(description="the picture (a batch encodes each picture)")
    crop: Literal["center", "none"] = Field(
        "center",
        description="center: shortest edge to the model's size, then a centre crop; none: squeezed whole",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        vision = self.clip_vision
        inputs = vision.preprocess(self.image.pixels, center_crop=self.crop == "center")
        encoded = clip_vision.encode(vision.model, inputs)
        return {
            "clip_vision_output": ClipVisionOutput(
                encoded.image_embeds, encoded.penultimate, encoded.last_hidden_state
            )
        }
