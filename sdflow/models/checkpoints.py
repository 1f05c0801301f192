"""Checkpoints: a LoadCheckpoint spec's fingerprint, cheap checks, and loading.

What a spec names (``builtin:NAME``, a path, a model-folder name or a hub id) is ``resolver.checkpoint``;
its family is ``detect``'s.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from sdflow.models import detect, dit_checkpoint, folder_load, resolver, singlefile, unclip
from sdflow.models.detect import UnknownFamily, UnknownLayout
from sdflow.models.families import Family
from sdflow.models.folder_configs import UnreadableConfig, listed
from sdflow.models.folders import ModelNotFound
from sdflow.models.loaded import LoadedCheckpoint, LoadOptions, tokenizer_fixed
from sdflow.models.resolver import CheckpointSource
from sdflow.models.weights import (
    WeightFileError,
    is_pickle,
    pickle_refusal,
    read_header,
)

# component -> (config file, weight file stems) of a diffusers folder
_COMPONENTS = {
    "unet": ("config.json", "diffusion_pytorch_model"),
    "transformer": ("config.json", "diffusion_pytorch_model"),
    "vae": ("config.json", "diffusion_pytorch_model"),
    "text_encoder": ("config.json", "model"),
    "text_encoder_2": ("config.json", "model"),
    "text_encoder_3": ("config.json", "model"),
    "scheduler": ("scheduler_config.json", None),
}
_PICKLED_WEIGHTS = {"diffusion_pytorch_model": "diffusion_pytorch_model.bin", "model": "pytorch_model.bin"}


class BadCheckpoint(ValueError):
    """The checkpoint exists but cannot be loaded (corrupt file, pickle refused, unknown layout...)."""


# -- fingerprints -------------------------------------------------------------------------------


def fingerprint(spec: str) -> str:
    """A digest of the checkpoint's files: content for built-ins, path, size and mtime otherwise."""
    try:
        source = resolver.checkpoint(spec)
    except ModelNotFound:
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
            if dit_checkpoint.parts_of(path) is None:  # an SD3 / Flux file has no SD layout
                found = detect.detection(path)
                if found.unclip is not None and found.unclip.problem is not None:
                    raise BadCheckpoint(f"{path}: this unCLIP file cannot load: {found.unclip.problem}")
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
    for slot in _family(str(folder)).encoders:
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
        if not is_pickle(source.path) and dit_checkpoint.parts_of(source.path) is not None:
            return dit_checkpoint.load(source.path, device, dtype, options)
        return singlefile.load(source.path, device, dtype, options)
    if source.kind == "folder":
        check_folder(source.path, options.allow_pickle)
    loaded = _load_pretrained(source.location, device, dtype)
    if options.prediction != "auto":
        loaded.scheduler_config["prediction_type"] = options.prediction
    return loaded


def _family(location: str) -> Family:
    """``detect.folder_family`` with its errors as BadCheckpoint (loading and its checks report those)."""
    try:
        return detect.folder_family(location)
    except (UnknownFamily, UnreadableConfig) as exc:
        raise BadCheckpoint(str(exc)) from None


def _load_pretrained(location: str, device: torch.device, dtype: torch.dtype) -> LoadedCheckpoint:
    """Each component of a diffusers folder or hub id: the UNet, the VAE, and the text encoders and
    tokenizers the family lists (SDXL base: two; the refiner: only the second). A local folder's
    models are read mapped from their safetensors files (``folder_load``: converted tensor by tensor,
    so the file's pages and the model never add up); anything else with ``from_pretrained``."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    family = _family(location)

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
    denoiser, denoiser_cls = family.denoiser_folder, getattr(diffusers, family.denoiser_class)
    unet_config = part(denoiser, lambda: denoiser_cls.load_config(location, subfolder=denoiser))
    unet = model(
        denoiser,
        lambda: folder_load.mapped(
            folder / denoiser, denoiser_cls.from_config, unet_config, "diffusers", dtype, device
        ),
        lambda: denoiser_cls.from_pretrained(location, subfolder=denoiser, torch_dtype=dtype),
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
        cls = getattr(transformers, slot.model_class)
        tokenizer_cls = getattr(transformers, slot.tokenizer_class)
        encoder = model(
            slot.folder,
            functools.partial(folder_load.text_encoder, folder / slot.folder, cls, dtype, device),
            functools.partial(cls.from_pretrained, location, subfolder=slot.folder, torch_dtype=dtype),
        )
        tokenizer = part(
            slot.tokenizer_folder,
            functools.partial(tokenizer_cls.from_pretrained, location, subfolder=slot.tokenizer_folder),
        )
        text_encoders.append(encoder)
        tokenizers.append(tokenizer_fixed(tokenizer, encoder))
    scheduler_config = part(
        "scheduler", lambda: dict(DDIMScheduler.load_config(location, subfolder="scheduler"))
    )
    for module in (unet, vae, *text_encoders):
        module.to(device).eval().requires_grad_(False)
    unclip_parts = None
    if local and unclip.is_unclip_folder(folder):
        unclip_parts = part("image_encoder", lambda: unclip.load_parts(folder, device, dtype))
    return LoadedCheckpoint(
        family.denoiser(unet),
        vae,
        text_encoders[0],
        tokenizers[0],
        scheduler_config,
        family,
        more_text_encoders=text_encoders[1:],
        more_tokenizers=tokenizers[1:],
        unclip=unclip_parts,
    )
