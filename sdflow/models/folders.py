"""Model folders: where names like ``dreamshaper_8.safetensors`` are listed (``resolver`` looks them up).

A root is a ComfyUI or A1111 install (holding ``models/``), or a ``models`` folder itself. Roots come
from ``SDFLOW_MODELS`` (paths separated by ``os.pathsep``), then from the user config file
(``$SDFLOW_CONFIG``, else ``$XDG_CONFIG_HOME/sdflow/config.yaml``, key ``model_folders``). Each kind
of model has the sub-folder names both layouts use.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import yaml

# kind -> sub-folder names under a models folder (ComfyUI's first, then A1111's)
KINDS: dict[str, tuple[str, ...]] = {
    "checkpoints": ("checkpoints", "Stable-diffusion", "diffusers"),
    "loras": ("loras", "Lora", "LyCORIS"),
    "vae": ("vae", "VAE"),
    "vae_approx": ("vae_approx",),  # TAESD files (ComfyUI's previews): taesd_decoder.safetensors...
    "embeddings": ("embeddings",),
    "controlnet": ("controlnet", "t2i_adapter", "ControlNet"),
    "upscale_models": ("upscale_models", "ESRGAN", "RealESRGAN"),
    # a diffusion model on its own (SD3 / Flux transformers), and text encoders on their own (ComfyUI's
    # split layout; Forge's folder names after ComfyUI's)
    "diffusion_models": ("diffusion_models", "unet", "Unet"),
    "text_encoders": ("text_encoders", "clip", "text_encoder"),
    "clip_vision": ("clip_vision",),
    "ipadapter": ("ipadapter", "ipadapters"),
    "gligen": ("gligen",),
    "hypernetworks": ("hypernetworks",),
}
WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth", ".gguf")
# folders that are one model (a diffusers checkpoint or component) rather than a sub-folder of models
_MODEL_FOLDER_MARKERS = ("model_index.json", "config.json")


class ModelNotFound(LookupError):
    """A model found nowhere: no such path, and no such name in the model folders (the message
    suggests the closest names); also an unreadable config file naming the folders."""


@dataclass(frozen=True)
class ModelFile:
    """One model found in a model folder: its name relative to the kind folder, and its path."""

    kind: str
    name: str
    path: Path


def config_file() -> Path:
    """The user config file's path (it need not exist)."""
    if os.environ.get("SDFLOW_CONFIG"):
        return Path(os.environ["SDFLOW_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "sdflow" / "config.yaml"


def roots() -> list[Path]:
    """Configured model roots, in search order: SDFLOW_MODELS first, then the config file's."""
    found: list[Path] = []
    for entry in os.environ.get("SDFLOW_MODELS", "").split(os.pathsep):
        if entry.strip():
            found.append(Path(entry.strip()).expanduser())
    found += _config_roots()
    unique: list[Path] = []
    for root in found:
        if root not in unique:
            unique.append(root)
    return unique


def _config_roots() -> list[Path]:
    path = config_file()
    if not path.is_file():
        return []
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ModelNotFound(f"cannot read the sdflow config file {path}: {exc}") from None
    entries = document.get("model_folders", []) if isinstance(document, dict) else []
    if isinstance(entries, str):
        entries = [entries]
    base = path.parent
    return [(base / Path(str(e)).expanduser()) for e in entries if str(e).strip()]


def kind_folders(kind: str) -> list[Path]:
    """Existing folders holding models of ``kind`` under every root, in search order (A1111 keeps
    embeddings at its top level, so ``ROOT/SUB`` is looked at as well as ``ROOT/models/SUB``)."""
    folders: list[Path] = []
    for root in roots():
        for models in (root / "models", root):
            for sub in KINDS[kind]:
                if (models / sub).is_dir() and (models / sub) not in folders:
                    folders.append(models / sub)
    return folders


def list_models(kind: str) -> list[ModelFile]:
    """Every model of ``kind`` in the model folders: weight files and model folders, recursively."""
    found: list[ModelFile] = []
    shared = _SHARED.get()
    for folder in kind_folders(kind):
        if shared is not None and folder not in shared:
            shared[folder] = _listing(folder)
        for path in shared[folder] if shared is not None else _listing(folder):
            found.append(ModelFile(kind, path.relative_to(folder).as_posix(), path))
    return found


# the listings of the scope being run (a node run's RunScope): each folder listed once in it
_SHARED: ContextVar[dict[Path, list[Path]] | None] = ContextVar("sdflow_shared_listings", default=None)


@contextlib.contextmanager
def listed_once(memo: dict[Path, list[Path]]) -> Iterator[None]:
    """Inside, each model folder is listed at most once, into ``memo`` (one run's scope; the next
    scope lists again, so a file added between runs is seen)."""
    token = _SHARED.set(memo)
    try:
        yield
    finally:
        _SHARED.reset(token)


# folder -> ((directory, mtime_ns) of every directory its walk read, the models found)
_LISTINGS: dict[Path, tuple[tuple[tuple[Path, int], ...], list[Path]]] = {}
_SETTLED_NS = 2_000_000_000  # a directory changed more recently may change again within its mtime's tick


def _listing(folder: Path) -> list[Path]:
    """The models under ``folder``, sorted; remembered while no directory the walk read has changed
    (a name is looked up several times per run, and ComfyUI/A1111 folders hold hundreds of files:
    re-checking costs one stat per directory instead of a listing)."""
    cached = _LISTINGS.get(folder)
    if cached is not None and all(_mtime_ns(d) == m for d, m in cached[0]):
        return cached[1]
    read: list[tuple[Path, int]] = []
    found = sorted(_walk(folder, read))
    now = time.time_ns()
    if all(now - m > _SETTLED_NS for _, m in read):
        _LISTINGS[folder] = (tuple(read), found)
    else:
        _LISTINGS.pop(folder, None)
    return found


def _mtime_ns(directory: Path) -> int:
    try:
        return directory.stat().st_mtime_ns
    except OSError:
        return -1


def _walk(folder: Path, read: list[tuple[Path, int]]):
    read.append((folder, _mtime_ns(folder)))
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if any((entry / marker).is_file() for marker in _MODEL_FOLDER_MARKERS):
                read.append((entry, _mtime_ns(entry)))  # a marker file removed makes it a sub-folder
                yield entry
            else:
                yield from _walk(entry, read)
        elif entry.suffix.lower() in WEIGHT_SUFFIXES:
            yield entry
