"""A node reading one model file or folder (a LoRA, a VAE): found by path or by name in the model
folders, fingerprinted by content for cache keys, pickles refused unless allowed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar

from sdflow.models import resolver, weights
from sdflow.models.checkpoints import file_digest
from sdflow.models.folders import ModelNotFound
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.scope import RunScope


def content_fingerprint(path: Path) -> str:
    """sha256 over a file's bytes, or over a folder's file names and bytes (each file hashed again
    only when its size or mtime changes)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        digest.update(file_digest(file))
    return digest.hexdigest()


class ModelFileNode(Node):
    """Base of nodes whose ``file`` field is a path or a name in the ``kind`` model folders."""

    abstract: ClassVar[bool] = True
    kind: ClassVar[str] = ""
    path_fields: ClassVar[tuple[str, ...]] = ("file",)
    folder_kinds: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls.folder_kinds = {"file": cls.kind}
        super().__init_subclass__(**kwargs)

    @classmethod
    def read_from(cls, path: Path) -> Path:
        """The file or folder the node actually reads for ``path`` (what its fingerprint covers)."""
        return path

    @classmethod
    def located(cls, spec: str, scope: RunScope) -> Path:
        """The file or folder ``spec`` names, looked up once per run scope (ModelNotFound if none)."""
        return scope.remember(("model", cls.kind, spec), lambda: resolver.resolve(cls.kind, spec))

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        try:
            return content_fingerprint(cls.read_from(cls.located(constants["file"], ctx.scope)))
        except (ModelNotFound, OSError):
            return "missing:" + constants["file"]

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        try:
            path = cls.located(constants["file"], scope)
        except ModelNotFound as exc:
            return [("file", str(exc))]
        if path.is_file() and weights.is_pickle(path) and not constants.get("allow_pickle"):
            return [("file", weights.pickle_refusal(path))]
        return []

    def resolved(self, ctx: RunContext) -> Path:
        """The file or folder ``file`` names (a located error when there is none)."""
        try:
            return self.located(self.file, ctx.scope)
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "file") from None
