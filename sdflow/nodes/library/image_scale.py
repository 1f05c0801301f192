"""ImageScale: resize an image (hires-fix workflows)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.pixels import Resample, resize_float, target_size
from sdflow.nodes.types import Image

LatentMode = Literal["nearest", "bilinear", "bicubic", "area"]


class ImageScale(Node):
    """Resize an image to a width and height, or by a factor."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image}

    image: Image = Field(description="the image to resize")
    width: int = Field(0, ge=0, le=16384, description="new width in pixels; 0 = from height or factor")
    height: int = Field(0, ge=0, le=16384, description="new height in pixels; 0 = from width or factor")
    factor: float = Field(
        1.0, gt=0.0, le=16.0, description="scale factor, used when width and height are both 0"
    )
    resample: Resample = Field(
        "lanczos", description="filter: nearest, bilinear, bicubic, lanczos or box (area average)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        size = target_size(self.image.size, self.width, self.height, self.factor)
        if size == self.image.size:
            return {"image": self.image}
        return {"image": Image(resize_float(self.image.pixels, size, self.resample))}
