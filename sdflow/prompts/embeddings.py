"""Textual-inversion embeddings: ``embedding:NAME`` resolved in the model folders and loaded.

Formats: A1111's (``string_to_param`` in a pickle, ``emb_params`` in a safetensors file), SDXL's
(``clip_l`` and ``clip_g``), and any file holding a single tensor. Pickled files (.pt, .bin...) load
only when the caller allows pickles, and then with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from sdflow.models import resolver
from sdflow.models.checkpoints import file_digest
from sdflow.models.folders import ModelNotFound
from sdflow.prompts.chunks import PromptError
from sdflow.prompts.parse import embedding_names

SAFE_SUFFIX = ".safetensors"
# keys an embedding's vectors are stored under; SDXL files have one per encoder (its role)
_ROLES = ("clip_l", "clip_g")
_KEYS = ("emb_params", "*")


def locate(name: str) -> Path:
    """The embedding file called ``name`` (a path, or a name in the embeddings folders)."""
    try:
        return resolver.resolve("embeddings", name)
    except ModelNotFound as exc:
        raise PromptError(f"embedding:{name}: {exc}") from None


def check(text: str, allow_pickle: bool) -> list[str]:
    """Why the embeddings ``text`` names cannot be used (missing, or pickled without the opt-in)."""
    problems = []
    for name in embedding_names(text):
        try:
            path = locate(name)
        except PromptError as exc:
            problems.append(str(exc))
            continue
        if not allow_pickle and not _is_safetensors(path):
            problems.append(_pickle_refusal(name, path))
    return problems


def fingerprint(text: str) -> str | None:
    """A digest of the embedding files ``text`` names (name, path and content), or None if none."""
    names = embedding_names(text)
    if not names:
        return None
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        try:
            path = locate(name)
        except PromptError:
            digest.update(b"missing\0")
            continue
        digest.update(str(path).encode() + b"\0" + file_digest(path))
    return digest.hexdigest()


class Library:
    """Embeddings loaded for one encode: each file read once, vectors picked per encoder width."""

    def __init__(self, allow_pickle: bool = False) -> None:
        self.allow_pickle = allow_pickle
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}

    def vectors_for(self, width: int, role: str | None = None):
        """A function name -> (n, width) vectors for one text encoder: ``width`` wide, and taken from
        the ``role`` key (``clip_l`` / ``clip_g``) of an SDXL embedding file when it has one."""
        return lambda name: self.vectors(name, width, role)

    def vectors(self, name: str, width: int, role: str | None = None) -> torch.Tensor:
        tensors = self._tensors(name)
        if role in tensors:
            candidates = {role: tensors[role]}
        else:
            candidates = {k: v for k, v in tensors.items() if k not in _ROLES} or tensors
        fitting = {k: v for k, v in candidates.items() if v.shape[-1] == width}
        if not fitting:
            widths = ", ".join(str(w) for w in sorted({v.shape[-1] for v in candidates.values()})) or "none"
            raise PromptError(
                f"embedding:{name} has vectors {widths} wide but this text encoder's are {width} "
                "(an embedding made for another model family?)"
            )
        key = next((k for k in _KEYS if k in fitting), next(iter(fitting)))
        return fitting[key].reshape(-1, width).float()

    def _tensors(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._loaded:
            path = locate(name)
            self._loaded[name] = _read(name, path, self.allow_pickle)
        return self._loaded[name]


def _read(name: str, path: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    if _is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise PromptError(f"embedding:{name}: cannot read {path}: {exc}") from None
    if not allow_pickle:
        raise PromptError(_pickle_refusal(name, path))
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure (there are many kinds) means a bad file
        raise PromptError(f"embedding:{name}: cannot read {path}: {exc}") from None
    return _flattened(loaded)


def _flattened(loaded: object) -> dict[str, torch.Tensor]:
    """The tensors of a pickled embedding: A1111's ``string_to_param`` (``{"*": tensor}``), a
    diffusers ``{token: tensor}`` file, or a bare tensor."""
    if isinstance(loaded, torch.Tensor):
        return {"*": loaded}
    if not isinstance(loaded, dict):
        return {}
    if isinstance(loaded.get("string_to_param"), dict):
        loaded = loaded["string_to_param"]
    return {str(k): v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


def _is_safetensors(path: Path) -> bool:
    return path.suffix.lower() == SAFE_SUFFIX


def _pickle_refusal(name: str, path: Path) -> str:
    return (
        f"embedding:{name} is a pickle file ({path.name}), which can run code when loaded: use a "
        f".safetensors embedding, or set allow_pickle: true if you trust this file"
    )
