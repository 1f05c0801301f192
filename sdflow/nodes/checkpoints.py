"""Finding and loading checkpoints: built-in names, diffusers folders on disk, hub ids."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

BUILTIN_PREFIX = "builtin:"
BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "builtin"


class CheckpointNotFound(LookupError):
    """The name is neither a built-in, nor a folder on disk, nor plausibly a hub id."""


def builtin_names() -> list[str]:
    """Names of the checkpoints shipped inside the package."""
    if not BUILTIN_ROOT.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_ROOT.iterdir() if (p / "model_index.json").is_file())


def resolve(spec: str) -> str:
    """A local folder path or a hub id for ``spec`` ('builtin:NAME', a path, or 'org/name')."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX) :]
        folder = BUILTIN_ROOT / name
        if not (folder / "model_index.json").is_file():
            known = ", ".join(BUILTIN_PREFIX + n for n in builtin_names()) or "none"
            raise CheckpointNotFound(f"no built-in checkpoint '{name}' (built-ins: {known})")
        return str(folder)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise CheckpointNotFound(
                f"'{spec}' is not a diffusers checkpoint folder (no model_index.json in it)"
            )
        return str(path)
    if _looks_like_hub_id(spec):
        return spec
    raise CheckpointNotFound(f"checkpoint folder '{spec}' does not exist")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~"))


def fingerprint(spec: str) -> str:
    """A digest of the checkpoint's files: content for built-ins, size and mtime for other folders."""
    try:
        source = resolve(spec)
    except CheckpointNotFound:
        return "missing:" + spec
    folder = Path(source)
    if not folder.is_dir():
        return "hub:" + spec
    digest = hashlib.sha256()
    builtin = spec.startswith(BUILTIN_PREFIX)
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(folder)).encode())
        stat = file.stat()
        if builtin:
            digest.update(_content_digest(str(file), stat.st_size, stat.st_mtime_ns))
        else:
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int) -> bytes:
    """sha256 of a file, hashed again only when its size or mtime changes (keys are made every run)."""
    return hashlib.sha256(Path(path).read_bytes()).digest()


@dataclass
class LoadedCheckpoint:
    """The parts of an SD 1.x checkpoint, on their device and in their dtypes."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict


def load(source: str, device: torch.device, dtype: torch.dtype) -> LoadedCheckpoint:
    """Load each component with diffusers / transformers ``from_pretrained``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    index = _model_index(source)
    if index.get("text_encoder_2") is not None:
        raise ValueError("SDXL checkpoints are not supported yet: only SD 1.x/2.x layouts load")
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
    vae_dtype = dtype
    vae_config = AutoencoderKL.load_config(source, subfolder="vae")
    if dtype == torch.float16 and vae_config.get("force_upcast", False):
        vae_dtype = torch.float32  # this VAE overflows in fp16, as diffusers also assumes
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=vae_dtype)
    text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype)
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
    scheduler_config = dict(DDIMScheduler.load_config(source, subfolder="scheduler"))
    for module in (unet, vae, text_encoder):
        module.to(device).eval().requires_grad_(False)
    return LoadedCheckpoint(unet, vae, text_encoder, tokenizer, scheduler_config)


def _model_index(source: str) -> dict:
    path = Path(source) / "model_index.json"
    if path.is_file():
        return json.loads(path.read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "model_index.json")).read_text())
