"""The EXIF UserComment of a JPEG or WebP picture: where A1111 writes its "parameters" text when it
saves those formats (``UNICODE`` + UTF-16, or ``ASCII`` + text, after an 8-byte code)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

EXIF_IFD, USER_COMMENT = 0x8769, 0x9286


def user_comment(path: str | Path) -> str | None:
    """The picture's EXIF UserComment as text, or None (no picture, no EXIF, no comment)."""
    try:
        with PILImage.open(path) as picture:
            raw = picture.getexif().get_ifd(EXIF_IFD).get(USER_COMMENT)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError):
        return None
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, bytes) or not raw:
        return None
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        big = not body.startswith(b"\xff\xfe")  # A1111 (piexif) writes big-endian without a mark
        return body.decode("utf-16-be" if big else "utf-16-le", errors="replace").lstrip("\ufeff") or None
    return body.decode("utf-8", errors="replace").rstrip("\x00") or None
