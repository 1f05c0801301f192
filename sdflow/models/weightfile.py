"""Reading one weights file into a state dict: safetensors always, pickles only when allowed.

A pickle (``.ckpt`` / ``.pt`` / ``.bin`` / ``.pth``) can run code when it is opened, so it is refused
unless the user opts in; even then it is opened with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")


class WeightFileError(ValueError):
    """The file is not a readable weights file (truncated, corrupt, refused pickle...)."""


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


def pickle_refusal(path: Path) -> str:
    """Why a pickle is refused, and how to allow it."""
    return (
        f"{path.name} is a pickle file ({path.suffix}), which can run arbitrary code when opened; "
        "prefer a .safetensors file, or set allow_pickle: true on this node to load it "
        "(with torch.load(weights_only=True)) if you trust where it came from"
    )


def read(path: Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, header metadata) of a weights file; WeightFileError says what is wrong."""
    if is_pickle(path):
        if not allow_pickle:
            raise WeightFileError(pickle_refusal(path))
        return _read_pickle(path), {}
    if path.suffix.lower() != ".safetensors":
        raise WeightFileError(
            f"{path.name}: unknown weights format '{path.suffix}' (expected .safetensors, or a pickle "
            f"{'/'.join(PICKLE_SUFFIXES)} with allow_pickle)"
        )
    return _read_safetensors(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise WeightFileError(
            f"{path} is not a readable .safetensors file (truncated or corrupt?): {exc}"
        ) from None
    return tensors, metadata


def _read_pickle(path: Path) -> dict[str, torch.Tensor]:
    import pickle

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise WeightFileError(f"{path} is not a readable weights pickle: {exc}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise WeightFileError(f"{path} holds a {type(loaded).__name__}, not a dict of tensors")
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
