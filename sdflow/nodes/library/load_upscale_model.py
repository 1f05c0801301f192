"""LoadUpscaleModel: an ESRGAN-family (or any spandrel-known) upscale model file, for UpscaleImage."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models import folders, upscale
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types_upscale import UpscaleModel


class LoadUpscaleModel(ModelFileNode):
    """Load a pixel upscale model (ESRGAN, RealESRGAN, Compact, SwinIR, HAT, DAT, SPAN...) via spandrel."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"upscale_model": UpscaleModel}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "upscale_models"

    file: str = Field(
        min_length=1,
        description=(
            "an upscale model .safetensors or .pth: a path, a name in the model folders' upscale_models "
            "(ESRGAN, RealESRGAN) folders, or 'builtin:tiny-upscale-2x'"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.pth/.pt/.ckpt), with torch.load(weights_only=True)"
    )

    @classmethod
    def located(cls, spec: str, scope: RunScope) -> Path:
        """A built-in upscaler ('builtin:tiny-upscale-2x'), else a path or a model-folder name."""
        path = upscale.builtin_path(spec)
        if path is None:
            return super().located(spec, scope)
        if not path.is_file():
            raise folders.ModelNotFound(f"no built-in upscale model '{spec}'")
        return path

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            upscaler = upscale.load(path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle)
        except upscale.UpscaleModelError as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"upscale_model": UpscaleModel(upscaler)}
