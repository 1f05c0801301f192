"""The server's folders on disk: output files served by URL (only from the output folder) and
uploaded input pictures (only into the input folder)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from sdflow.files import write_new_path

OUTPUTS_ROUTE = "/api/outputs/"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]")


def inside(root: Path, candidate: Path) -> bool:
    """True when ``candidate`` (symlinks followed) is ``root`` or under it."""
    try:
        return candidate.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError, ValueError):
        return False


def output_url(output_dir: str | Path, path: str | Path) -> str | None:
    """The URL path ``GET /api/outputs/...`` serves ``path`` at; None for a file outside the folder."""
    root = Path(output_dir).resolve()
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        return None
    return OUTPUTS_ROUTE + quote(relative.as_posix())


def output_file(output_dir: str | Path, relative: str) -> Path | None:
    """The existing file under ``output_dir`` that ``relative`` names; None for anything else
    (absolute paths, '..', a symlink leading out, a folder, a file that is not there)."""
    if not relative or "\x00" in relative or relative.startswith(("/", "\\")):
        return None
    parts = Path(relative).parts
    if any(part in ("..", "") for part in parts) or Path(relative).is_absolute():
        return None
    root = Path(output_dir)
    candidate = root / relative
    if not inside(root, candidate) or not candidate.is_file():
        return None
    return candidate


def upload_name(filename: str) -> str | None:
    """A safe file name from a client's: its last part, odd characters replaced; None if nothing is left."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = _SAFE_NAME.sub("_", name).lstrip(".")
    return name[:200] or None


def save_upload(input_dir: str | Path, filename: str, data: bytes) -> Path:
    """Write an uploaded file into ``input_dir`` under a new name (never over an earlier upload)."""
    return write_new_path(Path(input_dir) / filename, data)
