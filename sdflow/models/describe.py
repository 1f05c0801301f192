"""One line about a model file for `sdflow models`: its family as loading detects it (``detect``), read
from the safetensors header or the folder's JSON files only."""

from __future__ import annotations

from pathlib import Path

from sdflow.models import clip_vision, controlnet, gligen, ip_adapter, upscale
from sdflow.models.detect import (
    VAE as VAE_PREFIX,
)
from sdflow.models.detect import UnknownLayout, detect, folder_label, recognised
from sdflow.models.dit_detect import transformer_parts
from sdflow.models.family_hints import embedding_family, lora_family
from sdflow.models.weights import WeightFileError, is_pickle, read_header


def describe(kind: str, path: Path) -> str:
    """'SD 1.x', 'SD 2.x inpainting', 'diffusers folder, SD 2.x', 'pickle (not inspected)'..."""
    if kind == "upscale_models" and path.is_file():
        return upscale.describe(path)
    if kind == "controlnet" and (path.is_dir() or not is_pickle(path)):
        return _control(path)
    if kind == "clip_vision" and (path.is_dir() or not is_pickle(path)):
        return clip_vision.describe(path)
    if kind == "ipadapter" and path.is_file():
        return ip_adapter.describe(path)
    if kind == "gligen" and path.is_file():
        return gligen.describe(path)
    if kind == "vae" and path.is_dir():
        return _vae_folder(path)
    if path.is_dir():
        return "diffusers folder" + _folder_family(path)
    if is_pickle(path):
        return "pickle (not inspected; loads only with allow_pickle)"
    if path.suffix.lower() == ".gguf":
        return _gguf(path)
    try:
        header = read_header(path)
    except (OSError, WeightFileError) as exc:
        return f"unreadable: {exc}"
    shapes = header.shapes()
    parts = transformer_parts(shapes)
    if parts is not None:
        return parts.label()
    if kind == "checkpoints":
        try:
            return detect(shapes, header.metadata).label()
        except UnknownLayout:
            return "unknown layout: " + ("; ".join(recognised(shapes)) or "nothing recognised")
    if kind == "loras":
        return "LoRA" + _context_family(shapes)
    if kind == "embeddings":
        return "textual inversion" + _embedding_family(shapes)
    if kind == "vae":
        latent = shapes.get("decoder.conv_in.weight") or shapes.get(VAE_PREFIX + "decoder.conv_in.weight")
        return f"VAE, {latent[1]} latent channels" if latent else "VAE (unrecognised layout)"
    return f"{len(shapes)} tensors"


def _vae_folder(folder: Path) -> str:
    """'AutoencoderTiny folder, 4 latent channels': a VAE folder is no pipeline (no model_index.json)."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable VAE folder: {exc}"
    channels = config.get("latent_channels")
    name = f"{config.get('_class_name', 'VAE')} folder"
    return f"{name}, {channels} latent channels" if channels else name


def _control(path: Path) -> str:
    """'SD 1.x ControlNet (ldm layout)', 'SDXL T2I-Adapter (diffusers folder)'..."""
    try:
        found = controlnet.probe(path)
    except (OSError, WeightFileError, controlnet.ControlFileError) as exc:
        return f"unrecognised: {exc}"
    layout = "diffusers folder" if found.layout == "folder" else f"{found.layout} layout"
    return f"{found.label()} ({layout})"


def _folder_family(folder: Path) -> str:
    """The family loading takes the folder for (one detection for both: ``detect.folder_label``)."""
    label = folder_label(folder)
    return f", {label}" if label else ""


def _context_family(shapes: dict[str, tuple[int, ...]]) -> str:
    family, width = lora_family(shapes)
    return f", {family.label}" if family else f", context {width}" if width else ""


def _embedding_family(shapes: dict[str, tuple[int, ...]]) -> str:
    family, vectors = embedding_family(shapes)
    if family is None:
        return ""
    return f", {family.label}" if vectors is None else f", {family.label}, {vectors} vectors"


def _gguf(path: Path) -> str:
    """'Flux dev transformer, GGUF (Q8_0)': what the file holds and its quantization."""
    from sdflow.models import gguf_files

    try:
        shapes, kinds = gguf_files.shapes(path), gguf_files.quant_types(path)
    except (ImportError, ValueError) as exc:
        return f"GGUF (not inspected: {exc})"
    parts = transformer_parts(shapes)
    quantized = sorted({k for k in kinds.values() if k not in ("F32", "F16", "BF16")})
    return f"{parts.label() if parts else 'GGUF'}, GGUF ({', '.join(quantized) or 'not quantized'})"
