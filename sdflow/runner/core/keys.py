"""Content-based cache keys: the same work gets the same key in any workflow and any process."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def node_key(
    type_name: str,
    version: int,
    constants: dict[str, Any],
    upstream: dict[str, str],
    fingerprint: str | None,
    environment: str,
) -> str:
    """sha256 of the node's type and version, its constant fields, the keys of the outputs linked
    into it, any fingerprint of external input, and the device/dtype it runs on. No node ids."""
    payload = {
        "type": type_name,
        "version": version,
        "constants": constants,
        "upstream": upstream,
        "fingerprint": fingerprint,
        "environment": environment,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_unjsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def output_key(node: str, output: str) -> str:
    """The key of one output of a node with key ``node``."""
    return f"{node}:{output}"


def _unjsonable(value: Any) -> Any:
    raise TypeError(f"constant of type {type(value).__name__} cannot be part of a cache key")
