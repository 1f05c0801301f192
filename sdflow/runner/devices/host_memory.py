"""How the C allocator treats the large blocks a denoising loop allocates and frees on every step.

glibc's malloc hands each block above its mmap threshold (at most 32 MB) to a fresh ``mmap`` and
returns it with ``munmap`` when freed, so on the CPU every UNet step pays the kernel to map and
zero-fill its large activations anew: about 1.6 s of system time per 256x256 image (4 steps) on a
full-size SD1.5 model here. While a node that repeats the same computation runs (``Node.repeats``:
DenoiseLoop), ``reusing_freed_blocks`` serves large blocks from the heap and keeps freed ones for the
next step (``mallopt(M_MMAP_MAX, 0)``, a high ``M_TRIM_THRESHOLD``), as tcmalloc or jemalloc would;
afterwards it gives the kept memory back (``malloc_trim``) and large blocks are mapped again. Kept for
the whole run instead, the heap's fragmentation raised the peak of a 768x768 VAE decode from 7.2 to
9.6 GB, so the setting stays scoped to the loop. ``SDFLOW_MALLOC=system`` never changes glibc's
settings.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Iterator

import torch

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
KEEP_BYTES = 1 << 30  # while reusing: free memory at the heap's top is given back only above this
# afterwards: glibc's defaults once its dynamic threshold has grown to its maximum (fixed values,
# since setting any of them by mallopt ends the dynamic adjustment)
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 64 << 20
MMAP_MAX = 65536

_depth = 0


@contextlib.contextmanager
def reusing_freed_blocks(device: torch.device) -> Iterator[None]:
    """Inside: large blocks come from the heap and are reused (CPU, glibc); on leaving, the memory
    they held is given back. Nested uses keep the setting until the outermost one ends."""
    global _depth
    libc = _glibc() if device.type == "cpu" and _enabled() else None
    if libc is None:
        yield
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, MMAP_MAX)
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
            libc.malloc_trim(0)


def _enabled() -> bool:
    return os.environ.get("SDFLOW_MALLOC", "").lower() != "system" and sys.platform.startswith("linux")


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (musl and others have no such ``mallopt``)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc
