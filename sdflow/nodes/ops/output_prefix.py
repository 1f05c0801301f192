"""Output nodes' ``filename_prefix``: a file name start that may hold sub-folders of the output folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any


def prefix_problems(constants: dict[str, Any]) -> list[tuple[str, str]]:
    """The precheck of a ``filename_prefix`` field: it must stay inside the output folder."""
    prefix = PurePosixPath(constants["filename_prefix"])
    if prefix.is_absolute() or ".." in prefix.parts:
        return [("filename_prefix", "must stay inside the output folder (no '..', not absolute)")]
    return []


def prefix_place(output_dir: str | Path, filename_prefix: str) -> tuple[Path, str]:
    """(the folder, the file name start) a prefix names inside ``output_dir``."""
    prefix = PurePosixPath(filename_prefix)
    return Path(output_dir, *prefix.parent.parts), prefix.name
