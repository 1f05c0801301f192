"""Tiny autoencoders (TAESD, TAESDXL: diffusers' AutoencoderTiny) for fast previews and drafts.

Users keep them as ComfyUI does, in the ``vae_approx`` folder, as two files of the original
``nn.Sequential`` layout (``taesd_encoder.safetensors`` and ``taesd_decoder.safetensors``, or ``.pth``),
or as a diffusers folder. The decoder file is the one that matters (previews); the encoder beside it
is read when present. A tiny autoencoder works on the scaled latents directly (scaling factor 1).

``find`` picks the one that previews a model's latents (the server's previews): a built-in distilled
from that model's very VAE (``builtin:shapes-taesd`` for the shapes models), else the user's
``vae_approx`` files under ComfyUI's names (``Family.tiny_vae``: taesd, taesdxl).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from sdflow.models import folders, resolver, weights
from sdflow.models.checkpoints import file_digest
from sdflow.models.families import Family

# the original decoder starts with a Clamp module that diffusers folds into its forward
_DECODER_SHIFT = 1
_KEY = re.compile(r"^(\d+)\.(.+)$")
# in a built-in tiny autoencoder's training.json: sha256 of the VAE weights it was distilled from
TEACHER_KEY = "teacher_sha256"
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"


class TinyVaeError(ValueError):
    """The files are not a tiny autoencoder we can load."""


def is_tiny_file(shapes: dict[str, tuple[int, ...]]) -> bool:
    """True for an original-layout TAESD encoder or decoder file (keys like ``3.conv.0.weight``)."""
    return bool(shapes) and all(_KEY.match(key) for key in shapes)


def partner(path: Path) -> Path | None:
    """The encoder file beside a decoder file (or the decoder beside an encoder), if it exists."""
    for this, other in (("_decoder", "_encoder"), ("_encoder", "_decoder")):
        if this in path.stem:
            for suffix in (path.suffix, ".safetensors", ".pth"):
                found = path.with_name(path.stem.replace(this, other) + suffix)
                if found.is_file():
                    return found
    return None


def _which(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    """'encoder' or 'decoder': by name, else by the last layer (3 output channels: the decoder)."""
    if "_decoder" in path.stem:
        return "decoder"
    if "_encoder" in path.stem:
        return "encoder"
    last = max((int(m.group(1)) for key in shapes if (m := _KEY.match(key))), default=0)
    out = shapes.get(f"{last}.weight", (0,))
    return "decoder" if out[0] == 3 else "encoder"


def load_files(path: Path, dtype: torch.dtype, allow_pickle: bool = False) -> torch.nn.Module:
    """A tiny autoencoder from the original-layout file at ``path`` and its partner beside it."""
    from diffusers import AutoencoderTiny

    parts: dict[str, dict[str, torch.Tensor]] = {}
    for file in filter(None, (path, partner(path))):
        tensors, _ = weights.read_all(file, allow_pickle)
        if not is_tiny_file({k: tuple(v.shape) for k, v in tensors.items()}):
            raise TinyVaeError(
                f"{file.name} is not a TAESD encoder or decoder file (keys like '3.conv.0.weight')"
            )
        parts[_which(file, {k: tuple(v.shape) for k, v in tensors.items()})] = tensors
    state: dict[str, torch.Tensor] = {}
    channels = 4
    for part, tensors in parts.items():
        shift = _DECODER_SHIFT if part == "decoder" else 0
        for key, value in tensors.items():
            index, rest = _KEY.match(key).groups()  # type: ignore[union-attr]
            state[f"{part}.layers.{int(index) - shift}.{rest}"] = value
        if part == "decoder":
            channels = int(tensors[f"{_DECODER_SHIFT}.weight"].shape[1])
    model = AutoencoderTiny(latent_channels=channels)
    missing, unexpected = model.load_state_dict(state, strict=False)
    wanted = {k for k in model.state_dict() if k.split(".")[0] in parts}
    if unexpected or wanted & set(missing):
        names = ", ".join((unexpected or sorted(wanted & set(missing)))[:3])
        raise TinyVaeError(f"the weights do not fit TAESD's architecture (e.g. {names})")
    model.decodes_only = "encoder" not in parts
    return model.to(dtype)


def find(family: Family, teacher: Path | None = None, allow_pickle: bool = False) -> Path | None:
    """The tiny autoencoder that previews ``family``'s latents, or None: for ``teacher`` (the model's
    checkpoint folder or VAE folder) a built-in distilled from that very VAE; else the decoder file
    ``{family.tiny_vae}_decoder.safetensors`` (``.pth`` too with ``allow_pickle``) or an AutoencoderTiny
    folder ``{family.tiny_vae}/`` in the ``vae_approx`` model folders. The path loads with LoadVAE
    (``sdflow.models.vae.load``); ``decode_preview`` turns a latent into pixels with it."""
    if teacher is not None:
        found = _distilled_from(teacher)
        if found is not None:
            return found
    suffixes = (".safetensors", ".pth") if allow_pickle else (".safetensors",)
    for folder in folders.kind_folders("vae_approx"):
        for suffix in suffixes:
            if (folder / f"{family.tiny_vae}_decoder{suffix}").is_file():
                return folder / f"{family.tiny_vae}_decoder{suffix}"
        if (folder / family.tiny_vae / "config.json").is_file():
            return folder / family.tiny_vae
    return None


def _distilled_from(teacher: Path) -> Path | None:
    """The built-in tiny autoencoder whose training.json names the teacher's VAE weights' digest."""
    folder = teacher / "vae" if (teacher / "model_index.json").is_file() else teacher
    if not (folder / VAE_WEIGHTS).is_file():
        return None
    digest = file_digest(folder / VAE_WEIGHTS).hex()
    for name in resolver.builtin_names("vae"):
        note = resolver.BUILTIN_ROOT / name / "training.json"
        try:
            recorded = json.loads(note.read_text(encoding="utf-8")).get(TEACHER_KEY)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            continue
        if recorded == digest:
            return resolver.BUILTIN_ROOT / name
    return None


@torch.no_grad()
def decode_preview(tiny: torch.nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """A denoising loop's (scaled) latent as pixels (batch, 3, h, w) in [0, 1], by a tiny autoencoder."""
    parameter = next(tiny.parameters())
    pixels = tiny.decode(latent.to(parameter.device, parameter.dtype)).sample
    return pixels.float().clamp(-1, 1).add(1).div(2)
