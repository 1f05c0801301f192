"""Will a model fit? Its weights' bytes against the free memory of the device it loads to, checked
before loading so that a model too large is a clear error rather than an out-of-memory kill.

Free memory: CUDA's ``mem_get_info``, else the host's ``MemAvailable`` (Linux); unknown elsewhere (no
check). ``SDFLOW_MEMORY_LIMIT`` (bytes, or with a K/M/G suffix) caps it, for tests and for sharing a
machine. A margin is kept for activations.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

MARGIN = 1.1  # weights plus a tenth for what loading and the first step allocate
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class ModelTooLarge(ValueError):
    """The model's weights would not fit in the device's free memory."""


def weight_bytes(shapes: dict[str, tuple[int, ...]], dtype: torch.dtype) -> int:
    """The bytes of these tensors stored in ``dtype``."""
    return sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize


def free_bytes(device: torch.device) -> int | None:
    """The memory free on ``device`` (capped by SDFLOW_MEMORY_LIMIT), None when unknown."""
    found = None
    if device.type == "cuda" and torch.cuda.is_available():
        found = torch.cuda.mem_get_info(device)[0]
    elif device.type == "cpu":
        found = _host_available()
    limit = _limit()
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def _limit() -> int | None:
    text = os.environ.get("SDFLOW_MEMORY_LIMIT", "").strip().upper().removesuffix("B")
    if not text:
        return None
    scale = _UNITS.get(text[-1], 1)
    try:
        return int(float(text.rstrip("".join(_UNITS))) * scale)
    except ValueError:
        raise ModelTooLarge(
            f"SDFLOW_MEMORY_LIMIT={os.environ['SDFLOW_MEMORY_LIMIT']!r} is not a size"
        ) from None


def _host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def size_text(size: int) -> str:
    """'23.80 GB', '212.5 KB'..."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size / 1024:.1f} KB"


def check(what: str, needed: int, device: torch.device, hint: str) -> None:
    """ModelTooLarge when ``needed`` bytes (with the margin) exceed the free memory of ``device``."""
    free = free_bytes(device)
    if free is not None and needed * MARGIN > free:
        have = f"{device} has {size_text(free)} free"
        raise ModelTooLarge(f"{what} needs {size_text(needed)} for its weights but {have}: {hint}")
