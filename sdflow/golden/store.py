"""Goldens on disk: one folder per golden with golden.json, and a .npy and a .png per image.

A folder is written whole into a temporary sibling and then renamed into place, so a reader sees
either the old golden or the new one, never a mixture.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from sdflow.errors import Location
from sdflow.golden.capture import GoldenError
from sdflow.golden.report import to_picture

FORMAT = 1
META = "golden.json"
ARTIFACTS = (".actual.png", ".diff.png", ".side-by-side.png")
_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class GoldenMissing(GoldenError):
    """No golden has been recorded at the expected place."""


@dataclass
class Golden:
    """A recorded golden: its folder, its images by output name, and its metadata."""

    path: Path
    images: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def environment(self) -> dict[str, Any]:
        return self.meta.get("environment", {})


def save(path: Path | str, images: dict[str, np.ndarray], meta: dict[str, Any]) -> Golden:
    """Record ``images`` (output name -> (b, c, h, w) float32) with ``meta`` as the golden at ``path``."""
    path = Path(path)
    if path.exists() and not (path / META).is_file() and any(path.iterdir()):
        raise GoldenError(f"{path} exists and is not a golden folder: not replacing it", Location(str(path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a golden is meant to be shared
        outputs = {}
        for name, array in images.items():
            if not _OUTPUT_NAME.match(name):
                raise GoldenError(f"'{name}' cannot name a golden output (letters, digits, _ . -)")
            array = np.ascontiguousarray(array, dtype=np.float32)
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            (staging / f"{name}.npy").write_bytes(buffer.getvalue())
            to_picture(array).save(staging / f"{name}.png")
            outputs[name] = {
                "array": f"{name}.npy",
                "png": f"{name}.png",
                "shape": list(array.shape),
                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
            }
        document = {
            "format": FORMAT,
            "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **meta,
            "outputs": outputs,
        }
        (staging / META).write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
        for entry in staging.iterdir():
            _fsync(entry)
        _swap_into_place(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Golden(path, {name: np.asarray(a, dtype=np.float32) for name, a in images.items()}, document)


def load(path: Path | str) -> Golden:
    """The golden recorded at ``path``; GoldenMissing if there is none, GoldenError if it is damaged."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise GoldenMissing(f"no golden recorded at {path}/", Location(str(path)))
    try:
        document = json.loads(meta_path.read_text())
        images = {}
        for name, entry in document["outputs"].items():
            data = (path / entry["array"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise GoldenError(f"{entry['array']} does not match its checksum", Location(str(path)))
            images[name] = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoldenError(f"damaged golden ({type(exc).__name__}: {exc})", Location(str(meta_path))) from None
    return Golden(path, images, document)


def artifact_paths(folder: Path, name: str) -> dict[str, Path]:
    """Where a failed check of output ``name`` writes: actual, diff and side-by-side PNGs."""
    return {suffix.split(".")[1]: folder / f"{name}{suffix}" for suffix in ARTIFACTS}


def _swap_into_place(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``, replacing (then deleting) any folder already there."""
    if not path.exists():
        os.rename(staging, path)
        return
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(path, old)
    try:
        os.rename(staging, path)
    except OSError:
        os.rename(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
