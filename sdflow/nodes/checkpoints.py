"""Finding and loading checkpoints: built-in names, diffusers folders on disk, hub ids (any family)."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from sdflow.models.folder_family import family_of
from sdflow.models.families import Family

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
    """The parts of a checkpoint, on their device and in their dtypes, and the family they form."""

    family: Family
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list[torch.nn.Module]  # one per slot of the family, in its order
    tokenizers: list[object]
    scheduler_config: dict


def detect_family(source: str) -> Family:
    """The checkpoint's family, from its JSON files (UnknownFamily if none fits)."""
    index = _json(source, "model_index.json")
    pooled_dim = None
    if index.get("text_encoder_2"):
        pooled_dim = _json(source, "text_encoder_2/config.json").get("projection_dim")
    return family_of(index, _json(source, "unet/config.json"), pooled_dim)


def load(source: str, device: torch.device, dtype: torch.dtype) -> LoadedCheckpoint:
    """Load each component with diffusers / transformers ``from_pretrained``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    family = detect_family(source)
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype)
    vae_dtype = dtype
    vae_config = AutoencoderKL.load_config(source, subfolder="vae")
    if dtype == torch.float16 and vae_config.get("force_upcast", False):
        vae_dtype = torch.float32  # this VAE overflows in fp16, as diffusers also assumes
    vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=vae_dtype)
    text_encoders, tokenizers = [], []
    for slot in family.encoders:
        cls = CLIPTextModelWithProjection if slot.projection else CLIPTextModel
        text_encoders.append(cls.from_pretrained(source, subfolder=slot.folder, torch_dtype=dtype))
        tokenizers.append(CLIPTokenizer.from_pretrained(source, subfolder=slot.tokenizer_folder))
    scheduler_config = dict(DDIMScheduler.load_config(source, subfolder="scheduler"))
    for module in (unet, vae, *text_encoders):
        module.to(device).eval().requires_grad_(False)
    return LoadedCheckpoint(family, unet, vae, text_encoders, tokenizers, scheduler_config)


def _json(source: str, name: str) -> dict:
    path = Path(source) / name
    if path.is_file():
        return json.loads(path.read_text())
    if Path(source).is_dir():
        raise OSError(f"'{source}' has no {name}")
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, name)).read_text())
