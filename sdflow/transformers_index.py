"""transformers' index of its model folders, kept on disk between runs of the `sdflow` command.

``import transformers`` builds a lazy index of what every one of its ~570 model folders exports by
reading each module's source (``create_import_structure_from_path``), and builds it twice: once for
the package (``models`` as a folder) and once for ``transformers.models`` (its ``__init__.py``, a
different cache key). That is about 0.3 s a time on a free core. Here the folder's index is read from
a file kept under ``$XDG_CACHE_HOME/sdflow`` (``~/.cache/sdflow``) while every ``.py`` file under
the folder still has the size and modification time it had when the index was built (and the same
transformers version); otherwise it is built as transformers builds it, and kept. Each call gets its
own copy, as each of transformers' own two builds did. Used only with the lean imports (sdflow.lean).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

from sdflow import kept as keeping

SCANNER = "create_import_structure_from_path"


def fingerprint(folder: str, version: str) -> str:
    """Names, sizes and modification times of the ``.py`` files under ``folder``, hashed."""
    digest = hashlib.sha256(f"{version}\0{sys.version}\0{folder}".encode())
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(root, name))
                digest.update(f"{root}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def kept(folder: str, version: str, build: Callable[[str], Any]) -> bytes:
    """The pickled index of ``folder``: the kept file if it still matches, else ``build(folder)``
    (written for the next run when the cache folder is writable)."""
    key = fingerprint(folder, version)
    path = keeping.cache_dir() / f"transformers-index-{key[:32]}.pickle"
    with contextlib.suppress(OSError):
        return path.read_bytes()
    data = pickle.dumps(build(folder), protocol=pickle.HIGHEST_PROTOCOL)
    keeping.write_kept(path, data)
    return data


def install(checks: types.ModuleType) -> None:
    """Put the kept index under transformers' scanner (``checks``: transformers.utils.import_utils,
    just run). Leaves transformers as it is when its scanner is not the one this was written for."""
    scan = getattr(checks, SCANNER, None)
    if not callable(scan) or not hasattr(scan, "cache_clear"):
        return
    root = os.path.join(os.path.dirname(os.path.dirname(checks.__file__)), "models")
    version = getattr(sys.modules.get("transformers"), "__version__", "")
    memo: dict[str, bytes] = {}

    def scanned(module_path: Any) -> Any:
        folder = str(module_path)
        if os.path.isfile(folder):  # transformers scans a file's folder
            folder = os.path.dirname(folder)
        if os.path.normpath(folder) != root:
            return scan(folder)
        if folder not in memo:
            memo[folder] = kept(root, version, scan)
        return pickle.loads(memo[folder])

    scanned.cache_clear = scan.cache_clear  # type: ignore[attr-defined]
    setattr(checks, SCANNER, scanned)
