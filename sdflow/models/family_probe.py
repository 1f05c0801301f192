"""A checkpoint's family decided without loading it, for the runner's checks before a run.

Built-ins and diffusers folders: from model_index.json and the UNet and second text encoder configs;
single ``.safetensors`` files: from the header's keys (``detect``). Each answer is remembered while
the files it read keep their size and mtime. Pickles, hub ids and whatever cannot be read give None:
no early check (LoadCheckpoint's precheck reports a broken file; DenoiseLoop checks at run time).
"""

from __future__ import annotations

import functools
from pathlib import Path

from sdflow.models import checkpoints, singlefile
from sdflow.models.families import Family
from sdflow.models.weights import is_pickle

# what folder_family reads of a diffusers folder
_FOLDER_FILES = ("model_index.json", "unet/config.json", "text_encoder_2/config.json")


def checkpoint_family(spec: str) -> Family | None:
    """The family of the checkpoint a LoadCheckpoint ``checkpoint`` field names, or None if unknown."""
    try:
        source = checkpoints.resolve(spec)
        if source.kind == "file" and not is_pickle(source.path):
            return singlefile.detection(source.path).family
        if source.kind == "folder":
            return _folder_family(source.location, _stamps(source.path))
    except (LookupError, OSError, ValueError):  # not found, unreadable, unknown layout
        return None
    return None


def folder_family(folder: Path) -> Family | None:
    """The family of a diffusers folder, as loading decides it, or None when none fits."""
    return _folder_family(str(folder), _stamps(folder))


def _stamps(folder: Path) -> tuple[tuple[int, int] | None, ...]:
    stamps = []
    for name in _FOLDER_FILES:
        try:
            stat = (folder / name).stat()
            stamps.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


@functools.lru_cache(maxsize=256)
def _folder_family(location: str, stamps: tuple[tuple[int, int] | None, ...]) -> Family | None:
    try:
        return checkpoints.folder_family(location)
    except checkpoints.BadCheckpoint:
        return None
