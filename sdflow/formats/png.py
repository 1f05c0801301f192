"""PNG files: the signature check and the text chunks that carry workflows and generation parameters."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from sdflow.errors import Location, WorkflowError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_png(path: str | Path) -> bool:
    """True when the file starts with the PNG signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
    except OSError:
        return False


def text_chunks(path: str | Path) -> dict[str, str]:
    """Every tEXt / iTXt / zTXt chunk of a PNG, by key."""
    try:
        with PILImage.open(path) as picture:
            picture.load()  # chunks written after the pixel data are read only with them
            return {str(k): v for k, v in getattr(picture, "text", {}).items() if isinstance(v, str)}
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise WorkflowError(f"cannot read the picture: {exc}", Location(str(path))) from None
