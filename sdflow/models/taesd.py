"""Tiny autoencoders (TAESD, TAESDXL: diffusers' AutoencoderTiny) for fast previews and drafts.

Users keep them as ComfyUI does, in the ``vae_approx`` folder, as two files of the original
``nn.Sequential`` layout (``taesd_encoder.safetensors`` and ``taesd_decoder.safetensors``, or ``.pth``),
or as a diffusers folder. The decoder file is the one that matters (previews); the encoder beside it
is read when present. A tiny autoencoder works on the scaled latents directly (scaling factor 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from sdflow.models import weights

# the original decoder starts with a Clamp module that diffusers folds into its forward
_DECODER_SHIFT = 1
_KEY = re.compile(r"^(\d+)\.(.+)$")


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
