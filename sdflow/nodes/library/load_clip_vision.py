"""LoadCLIPVision: a CLIP vision encoder, for CLIPVisionEncode, ApplyIPAdapter and unCLIP."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.models import clip_vision, weights
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types_vision import ClipVision


class LoadCLIPVision(ModelFileNode):
    """Load a CLIP vision model (CLIPVisionModelWithProjection) and its image preprocessing."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"clip_vision": ClipVision}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "clip_vision"

    file: str = Field(
        min_length=1,
        description=(
            "a CLIP vision .safetensors as ComfyUI's clip_vision folder keeps them, a transformers or "
            "diffusers image_encoder folder, or a name in the model folders' clip_vision folders"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.bin/.pt/.ckpt), with torch.load(weights_only=True)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            model, preprocess = clip_vision.load(
                path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle
            )
        except (clip_vision.ClipVisionFileError, weights.WeightFileError, OSError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"clip_vision": ClipVision(model, preprocess, path.name if path.is_dir() else path.stem)}
