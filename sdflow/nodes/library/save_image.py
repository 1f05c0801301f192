"""SaveImage: PNG files with the workflow embedded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from pydantic import Field

from sdflow.formats.infotext import INFOTEXT_KEY, Infotext, format_infotext, settings
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.output_prefix import prefix_place, prefix_problems
from sdflow.nodes.ops.pixels import to_pil
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image, SavedFiles


class SaveImage(Node):
    """Write each image as a new PNG in the output folder, with the workflow as text metadata.

    Behind a plain txt2img / img2img it also writes A1111's "parameters" text, which model-sharing
    sites and A1111 tools read.
    """

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"files": SavedFiles}
    is_output: ClassVar[bool] = True

    image: Image = Field(description="the images to save")
    filename_prefix: str = Field(
        "sdflow",
        min_length=1,
        pattern=r"^[^\\]+$",
        description="file name start, may include sub-folders: PREFIX_00001.png",
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        metadata = json.dumps([ctx.metadata, ctx.generation], sort_keys=True)
        return hashlib.sha256(f"{Path(ctx.output_dir).resolve()}\n{metadata}".encode()).hexdigest()

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return prefix_problems(constants)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        info = PngInfo()
        for key, value in ctx.metadata.items():
            info.add_text(key, value)
        if ctx.generation is not None:
            info.add_text(INFOTEXT_KEY, _infotext(ctx.generation, self.image.size))
        folder, stem = prefix_place(ctx.output_dir, self.filename_prefix)
        paths = []
        for picture in to_pil(self.image):
            path = ctx.write_new(folder, stem, ".png", _png_writer(picture, info))
            paths.append(str(path))
        return {"files": SavedFiles(tuple(paths))}


def _infotext(generation: dict[str, Any], size: tuple[int, int]) -> str:
    given = dict(generation)
    prompt, negative = given.pop("prompt"), given.pop("negative")
    return format_infotext(Infotext(prompt, negative, settings(**given, size=size)))


def _png_writer(picture: PILImage.Image, info: PngInfo):
    return lambda handle: picture.save(handle, format="PNG", pnginfo=info)
