"""LoadImage and LoadMask: picture files (PNG, JPEG, WebP...) into Image and Mask tensors."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.pixels import from_pil, plane_from_pil
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image, Mask

# PIL raises these for files it cannot decode (SyntaxError for some broken PNG chunks).
UNREADABLE = (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError)
WIDE_GREY_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16-bit and float grey
PATH_HELP = "picture file (PNG, JPEG, WebP...); a relative path is relative to the workflow file's folder"

Channel = Literal["luminance", "red", "green", "blue", "alpha"]


class PictureError(ValueError):
    """A picture file is missing or cannot be decoded; the message says which and why."""


def open_picture(path: str) -> PILImage.Image:
    """The file's first frame, decoded, with its EXIF orientation applied (as cameras intend)."""
    file = Path(path)
    if not file.exists():
        raise PictureError(f"image file not found: {path}")
    if not file.is_file():
        raise PictureError(f"not a file: {path}")
    try:
        with PILImage.open(file) as picture:
            picture.load()
            return ImageOps.exif_transpose(picture)
    except UNREADABLE as exc:
        raise PictureError(f"cannot read image file {path}: {_reason(exc)}") from None


def check_picture(path: str) -> str | None:
    """Why ``path`` cannot be loaded (missing, a folder, not a picture), or None: a cheap header read."""
    file = Path(path)
    if not file.exists():
        return f"image file not found: {path}"
    if not file.is_file():
        return f"not a file: {path}"
    try:
        with PILImage.open(file):
            return None
    except UNREADABLE as exc:
        return f"cannot read image file {path}: {_reason(exc)}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PILImage.UnidentifiedImageError):
        return "not a picture format Pillow can decode (PNG, JPEG, WebP...)"
    return str(exc) or type(exc).__name__


def file_digest(path: str) -> str:
    """sha256 of the file's bytes, so that editing the file invalidates cached outputs."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable:" + path


def has_alpha(picture: PILImage.Image) -> bool:
    return picture.has_transparency_data


def _wide_grey(picture: PILImage.Image) -> torch.Tensor:
    """16-bit or float grey as (1, 1, h, w) in [0, 1] (PIL's own conversion to 8 bits clips)."""
    array = np.asarray(picture, dtype=np.float32)
    if picture.mode != "F":
        array = array / 65535.0
    return torch.from_numpy(np.clip(array, 0.0, 1.0)).unsqueeze(0).unsqueeze(0).contiguous()


def rgb_of(picture: PILImage.Image) -> torch.Tensor:
    """(1, 3, h, w) RGB in [0, 1]; grey is repeated into three channels; alpha is dropped (not
    composited), as diffusers' load_image does."""
    if picture.mode in WIDE_GREY_MODES:
        return _wide_grey(picture).repeat(1, 3, 1, 1)
    return from_pil(picture.convert("RGB"))


def luminance_of(picture: PILImage.Image) -> torch.Tensor:
    """(1, 1, h, w) grey in [0, 1] by PIL's 'L' conversion, as diffusers' mask processor computes it."""
    if picture.mode in WIDE_GREY_MODES:
        return _wide_grey(picture)
    return plane_from_pil(picture.convert("L"))


def transparency_of(picture: PILImage.Image) -> torch.Tensor:
    """(1, 1, h, w): 1 where fully transparent, 0 where opaque; all 0 without an alpha channel."""
    if not has_alpha(picture):
        return torch.zeros(1, 1, picture.height, picture.width)
    return 1.0 - plane_from_pil(picture.convert("RGBA").getchannel("A"))


class _PictureFile(Node):
    """A node reading one picture file: its cache key follows the file's bytes."""

    abstract: ClassVar[bool] = True
    path_fields: ClassVar[tuple[str, ...]] = ("path",)

    path: str = Field(min_length=1, description=PATH_HELP)

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        return file_digest(constants["path"])

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        problem = check_picture(constants["path"])
        return [("path", problem)] if problem else []


class LoadImage(_PictureFile):
    """Load a picture as an RGB image (EXIF rotation applied), with its transparency as a mask."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"image": Image, "mask": Mask}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            picture = open_picture(self.path)
        except PictureError as exc:
            raise ctx.error(str(exc), "path") from None
        # mask: 1 (repaint) where the picture is transparent, as an editor's eraser leaves it.
        return {"image": Image(rgb_of(picture)), "mask": Mask(transparency_of(picture))}


class LoadMask(_PictureFile):
    """Load an inpainting mask from a picture: white (1) means repaint, black (0) means keep."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"mask": Mask}

    channel: Channel = Field(
        "luminance",
        description=(
            "what to read: 'luminance' (grey level, white = repaint), 'red'/'green'/'blue' (that "
            "channel, bright = repaint), 'alpha' (transparent = repaint, as an eraser leaves it)"
        ),
    )
    invert: bool = Field(False, description="swap repaint and keep (1 - mask)")

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        problems = super().precheck(constants, scope)
        if problems:
            return problems
        if constants["channel"] == "alpha":
            with PILImage.open(constants["path"]) as picture:
                if not has_alpha(picture):
                    return [("channel", f"{constants['path']} has no alpha channel to read the mask from")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            picture = open_picture(self.path)
        except PictureError as exc:
            raise ctx.error(str(exc), "path") from None
        if self.channel == "luminance":
            values = luminance_of(picture)
        elif self.channel == "alpha":
            if not has_alpha(picture):
                raise ctx.error(f"{self.path} has no alpha channel to read the mask from", "channel")
            values = transparency_of(picture)
        else:
            index = ("red", "green", "blue").index(self.channel)
            values = rgb_of(picture)[:, index : index + 1].contiguous()
        return {"mask": Mask(1.0 - values if self.invert else values)}
