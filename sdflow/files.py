"""Writing outputs safely: atomically, and never over an earlier file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_new(folder: Path | str, stem: str, suffix: str, write: Callable[[BinaryIO], None]) -> Path:
    """Write a new file ``folder/stem_NNNNN.suffix`` with the first free number; return its path.

    The content goes to a temporary file first and is then hard-linked into place, which fails
    rather than replacing a file that appeared meanwhile: no reader sees a half-written file and
    no earlier output is overwritten.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        number = _next_number(folder, stem, suffix)
        while True:
            target = folder / f"{stem}_{number:05d}{suffix}"
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                number += 1
    finally:
        os.unlink(tmp)


def write_new_path(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; if it exists, to ``stem-1.suffix``, ``stem-2``... instead."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        candidate, number = path, 0
        while True:
            try:
                os.link(tmp, candidate)
                return candidate
            except FileExistsError:
                number += 1
                candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
    finally:
        os.unlink(tmp)


def _next_number(folder: Path, stem: str, suffix: str) -> int:
    """One past the highest number already used for ``stem`` (so numbering never goes back)."""
    highest = 0
    prefix = f"{stem}_"
    for entry in folder.glob(f"{stem}_*{suffix}"):
        digits = entry.name[len(prefix) : -len(suffix)]
        if digits.isdigit():
            highest = max(highest, int(digits))
    return highest + 1
