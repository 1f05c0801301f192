"""Checkpoints: what a LoadCheckpoint spec names, its fingerprint, cheap checks, and loading.

A spec is ``builtin:NAME``, a path (a single weight file or a diffusers folder), a name found in the
configured model folders (``sdflow.models.folders``), or a hub id ``org/name`` (needs network).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdflow.models import folder_load, folders, singlefile
from sdflow.models.detect import UnknownLayout
from sdflow.models.families import Family
from sdflow.models.folder_family import UnknownFamily, family_of, listed
from sdflow.models.loaded import LoadedCheckpoint, LoadOptions, tokenizer_fixed
from sdflow.models.weights import (
    PICKLE_SUFFIXES,
    SAFE_SUFFIXES,
    WeightFileError,
    is_pickle,
    pickle_refusal,
    read_header,
)

BUILTIN_PREFIX = "builtin:"
BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "builtin"
WEIGHT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
# component -> (config file, weight file stems) of a diffusers folder
_COMPONENTS = {
    "unet": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "text_encoder_2": ("config.json", "model"),
    "scheduler": ("scheduler_config.json", None),
}
_PICKLED_WEIGHTS = {"diffusion_pytorch_model": "diffusion_pytorch_model.bin", "model": "pytorch_model.bin"}


class CheckpointNotFound(LookupError):
    """The spec names no built-in, no file or folder, and nothing in the model folders."""


class BadCheckpoint(ValueError):
    """The checkpoint exists but cannot be loaded (corrupt file, pickle refused, unknown layout...)."""


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint is: a diffusers ``folder``, a single ``file``, or a ``hub`` id."""

    kind: str
    location: str
    builtin: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)


def builtin_names() -> list[str]:
    """Names of the checkpoints shipped inside the package."""
    if not BUILTIN_ROOT.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_ROOT.iterdir() if (p / "model_index.json").is_file())


def resolve(spec: str) -> CheckpointSource:
    """The checkpoint ``spec`` names (CheckpointNotFound with suggestions if none)."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        folder = BUILTIN_ROOT / name
        if not (folder / "model_index.json").is_file():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_names()) or "none"
            raise CheckpointNotFound(f"no built-in checkpoint '{name}' (built-ins: {known})")
        return CheckpointSource("folder", str(folder), builtin=True)
    path = Path(spec).expanduser()
    if not path.exists():
        found = folders.find("checkpoints", spec)
        if found is None and _looks_like_hub_id(spec):
            return CheckpointSource("hub", spec)
        if found is None and (path.is_absolute() or spec.startswith((".", "~"))):
            raise CheckpointNotFound(f"checkpoint file or folder '{spec}' does not exist")
        if found is None:
            raise CheckpointNotFound(folders.not_found_message("checkpoints", spec) + _builtin_hint())
        path = found
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise CheckpointNotFound(
                f"'{spec}' is a folder but not a diffusers checkpoint (no model_index.json in it)"
            )
        return CheckpointSource("folder", str(path))
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise CheckpointNotFound(
            f"'{spec}' is not a checkpoint file: expected {', '.join(WEIGHT_SUFFIXES)} or a diffusers folder"
        )
    return CheckpointSource("file", str(path))


def _builtin_hint() -> str:
    return f"; built-ins: {', '.join(BUILTIN_PREFIX + n for n in builtin_names())}"


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not spec.startswith((".", "~"))
        and not spec.lower().endswith(WEIGHT_SUFFIXES)
    )


# -- fingerprints -------------------------------------------------------------------------------


def fingerprint(spec: str) -> str:
    """A digest of the checkpoint's files: content for built-ins, path, size and mtime otherwise."""
    try:
        source = resolve(spec)
    except CheckpointNotFound:
        return "missing:" + spec
    if source.kind == "hub":
        return "hub:" + spec
    digest = hashlib.sha256()
    root = source.path.resolve()
    for name, size, mtime_ns in [(str(root), *_stat(root))] if source.kind == "file" else folder_state(root):
        digest.update(name.encode())
        if source.builtin:
            digest.update(file_digest(Path(name)))
        else:
            digest.update(f"{size}:{mtime_ns}".encode())
    return digest.hexdigest()


def folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file under ``folder``, sorted: changes when any file does."""
    found: list[tuple[str, int, int]] = []
    pending = [str(folder)]
    while pending:  # os.scandir: a tenth of what pathlib's rglob + stat cost (run on every run)
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file():
                    stat = entry.stat()
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


def _stat(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def file_digest(path: Path) -> bytes:
    """sha256 of a file's bytes, remembered while its size and mtime stay the same."""
    stat = path.stat()
    return _content_digest(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file, hashed again only when its size or mtime changes (keys are made every run);
    read in chunks, as LoRA and VAE files of hundreds of MB are hashed too."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.digest()


# -- cheap checks -------------------------------------------------------------------------------


def check(source: CheckpointSource, allow_pickle: bool = False) -> None:
    """Refuse, from headers and configs only, what cannot load: BadCheckpoint naming the file."""
    if source.kind == "file":
        path = source.path
        if is_pickle(path):
            if not allow_pickle:
                raise BadCheckpoint(pickle_refusal(path))
            return
        try:
            singlefile.detection(path)
        except (OSError, WeightFileError, UnknownLayout) as exc:
            raise BadCheckpoint(f"{path}: {exc}") from None
    elif source.kind == "folder":
        check_folder(source.path, allow_pickle)


def check_folder(folder: Path, allow_pickle: bool = False) -> None:
    """Every component of a diffusers folder has a readable config and weights (BadCheckpoint);
    checked once per state of the folder's files (pre-run checks run on every run)."""
    _check_folder(folder, allow_pickle, folder_state(folder))


@functools.lru_cache(maxsize=32)
def _check_folder(folder: Path, allow_pickle: bool, state: tuple[tuple[str, int, int], ...]) -> None:
    index = _json(folder / "model_index.json")
    for component, (config_name, stem) in _COMPONENTS.items():
        if component != "scheduler" and not listed(index.get(component)):
            continue
        _json(folder / component / config_name)
        if stem is not None:
            _check_weights(folder / component, stem, allow_pickle)
    for slot in folder_family(str(folder)).encoders:
        tokenizer = folder / slot.tokenizer_folder
        if not (tokenizer / "tokenizer.json").is_file() and not (tokenizer / "vocab.json").is_file():
            raise BadCheckpoint(f"missing tokenizer file {tokenizer / 'vocab.json'}")


def _check_weights(folder: Path, stem: str, allow_pickle: bool) -> None:
    safe = folder / f"{stem}.safetensors"
    if safe.is_file():
        try:
            stat = safe.stat()
            _header_error(str(safe), stat.st_size, stat.st_mtime_ns)
        except OSError as exc:
            raise BadCheckpoint(str(exc)) from None
        return
    if (folder / f"{stem}.safetensors.index.json").is_file():
        _json(folder / f"{stem}.safetensors.index.json")
        return
    pickled = folder / _PICKLED_WEIGHTS[stem]
    if pickled.is_file():
        if not allow_pickle:
            raise BadCheckpoint(f"{pickled}: {pickle_refusal(pickled)}")
        return
    raise BadCheckpoint(f"missing weights file {safe}")


@functools.lru_cache(maxsize=64)
def _header_error(path: str, size: int, mtime_ns: int) -> None:
    """Check a weight file's header once per file state (pre-run checks run on every run)."""
    try:
        read_header(Path(path))
    except WeightFileError as exc:
        raise BadCheckpoint(str(exc)) from None


def _json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadCheckpoint(f"missing file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCheckpoint(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise BadCheckpoint(f"{path} is not a JSON object")
    return document


# -- loading ------------------------------------------------------------------------------------


def load(
    source: CheckpointSource,
    device: torch.device,
    dtype: torch.dtype,
    options: LoadOptions | None = None,
) -> LoadedCheckpoint:
    """Load ``source``: a single file offline from shipped configs, a folder or hub id with
    ``from_pretrained``. A ``prediction`` other than 'auto' overrides the scheduler's."""
    options = options or LoadOptions()
    if source.kind == "file":
        check(source, options.allow_pickle)
        return singlefile.load(source.path, device, dtype, options)
    if source.kind == "folder":
        check_folder(source.path, options.allow_pickle)
    loaded = _load_pretrained(source.location, device, dtype)
    if options.prediction != "auto":
        loaded.scheduler_config["prediction_type"] = options.prediction
    return loaded


def folder_family(location: str) -> Family:
    """The family of a diffusers folder or hub id, from its JSON files (BadCheckpoint if none fits)."""
    index = _model_index(location)
    pooled_dim = None
    if index.get("text_encoder_2") is not None:
        pooled_dim = _component_config(location, "text_encoder_2").get("projection_dim")
    try:
        return family_of(index, _component_config(location, "unet"), pooled_dim)
    except UnknownFamily as exc:
        raise BadCheckpoint(f"{location}: {exc}") from None


def _load_pretrained(location: str, device: torch.device, dtype: torch.dtype) -> LoadedCheckpoint:
    """Each component of a diffusers folder or hub id: the UNet, the VAE, and the text encoders and
    tokenizers the family lists (SDXL base: two; the refiner: only the second). A local folder's
    models are read mapped from their safetensors files (``folder_load``: converted tensor by tensor,
    so the file's pages and the model never add up); anything else with ``from_pretrained``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    family = folder_family(location)

    def part(component: str, load: Any) -> Any:
        try:
            return load()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise BadCheckpoint(f"cannot load {Path(location) / component}: {exc}") from None

    local = Path(location).is_dir()

    def model(component: str, fast: Any, slow: Any) -> Any:
        """Mapped from a local folder's safetensors file where it can be, else ``from_pretrained``."""
        loaded = part(component, fast) if local else None
        return loaded if loaded is not None else part(component, slow)

    folder = Path(location)
    unet_config = part("unet", lambda: UNet2DConditionModel.load_config(location, subfolder="unet"))
    unet = model(
        "unet",
        lambda: folder_load.unet(folder / "unet", unet_config, dtype, device),
        lambda: UNet2DConditionModel.from_pretrained(location, subfolder="unet", torch_dtype=dtype),
    )
    vae_config = part("vae", lambda: AutoencoderKL.load_config(location, subfolder="vae"))
    vae_dtype = torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast") else dtype
    vae = model(
        "vae",
        lambda: folder_load.vae(folder / "vae", vae_config, vae_dtype, device),
        lambda: AutoencoderKL.from_pretrained(location, subfolder="vae", torch_dtype=vae_dtype),
    )
    text_encoders, tokenizers = [], []
    for slot in family.encoders:
        cls = CLIPTextModelWithProjection if slot.projection else CLIPTextModel
        encoder = model(
            slot.folder,
            functools.partial(folder_load.text_encoder, folder / slot.folder, cls, dtype, device),
            functools.partial(cls.from_pretrained, location, subfolder=slot.folder, torch_dtype=dtype),
        )
        tokenizer = part(
            slot.tokenizer_folder,
            functools.partial(CLIPTokenizer.from_pretrained, location, subfolder=slot.tokenizer_folder),
        )
        text_encoders.append(encoder)
        tokenizers.append(tokenizer_fixed(tokenizer, encoder))
    scheduler_config = part(
        "scheduler", lambda: dict(DDIMScheduler.load_config(location, subfolder="scheduler"))
    )
    for module in (unet, vae, *text_encoders):
        module.to(device).eval().requires_grad_(False)
    return LoadedCheckpoint(
        unet,
        vae,
        text_encoders[0],
        tokenizers[0],
        scheduler_config,
        family,
        more_text_encoders=text_encoders[1:],
        more_tokenizers=tokenizers[1:],
    )


def _component_config(location: str, component: str) -> dict[str, Any]:
    path = Path(location) / component / "config.json"
    if path.is_file() or Path(location).is_dir():
        return _json(path)
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(location, f"{component}/config.json")).read_text())


def _model_index(location: str) -> dict[str, Any]:
    path = Path(location) / "model_index.json"
    if path.is_file():
        return _json(path)
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(location, "model_index.json")).read_text())
