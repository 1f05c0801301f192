"""How the C allocator treats the large blocks CPU inference allocates and frees on every step.

glibc's malloc hands each block above its mmap threshold (at most 32 MB) to a fresh ``mmap`` and
returns it with ``munmap`` when freed. A UNet step and a VAE decode allocate many such blocks, so on
the CPU every step pays the kernel to map and zero-fill them anew: about 2 s of system time per
256x256 image on a full-size SD1.5 model here, a tenth of the run. Serving them from the heap and
keeping freed memory for reuse (``mallopt(M_MMAP_MAX, 0)``, a high ``M_TRIM_THRESHOLD``) removes that
cost, as tcmalloc or jemalloc would. The price: memory freed inside the process is reused by it rather
than given back to the system, until ``release_free_memory`` (``Runner.clear`` calls it, and
``sdflow bench`` before each measured size) or the process's exit. ``SDFLOW_MALLOC=system`` keeps
glibc's default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
KEEP_BYTES = 1 << 30  # free memory at the heap's top is given back only above this (int-sized)

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process (glibc only); True if they are in effect."""
    global _applied
    if _applied is None:
        _applied = _apply()
    return _applied


def release_free_memory() -> None:
    """Give the memory the allocator holds free back to the system (``malloc_trim``), e.g. after a
    cache is emptied, or before measuring a process's resident memory."""
    libc = _glibc() if _applied else None  # glibc's default gives memory back by itself
    if libc is not None:
        libc.malloc_trim(0)


def _apply() -> bool:
    if os.environ.get("SDFLOW_MALLOC", "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


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
