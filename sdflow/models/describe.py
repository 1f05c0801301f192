"""One line about a model file for `sdflow models`: its family, read from the safetensors header only."""

from __future__ import annotations

from pathlib import Path

from sdflow.models import controlnet, upscale
from sdflow.models.detect import UnknownLayout, detect, recognised
from sdflow.models.families import FAMILIES, Family
from sdflow.models.family_probe import folder_family
from sdflow.models.weights import WeightFileError, is_pickle, read_header

# the width of the text conditioning a LoRA or an embedding was made for -> family
_BY_CONTEXT: dict[int, Family] = {f.context_dim: f for f in FAMILIES.values() if f.text_encoders == 1}


def describe(kind: str, path: Path) -> str:
    """'SD 1.x', 'SD 2.x inpainting', 'diffusers folder, SD 2.x', 'pickle (not inspected)'..."""
    if kind == "upscale_models" and path.is_file():
        return upscale.describe(path)
    if kind == "controlnet" and (path.is_dir() or not is_pickle(path)):
        return _control(path)
    if path.is_dir():
        return "diffusers folder" + _folder_family(path)
    if is_pickle(path):
        return "pickle (not inspected; loads only with allow_pickle)"
    try:
        header = read_header(path)
    except (OSError, WeightFileError) as exc:
        return f"unreadable: {exc}"
    shapes = header.shapes()
    if kind == "checkpoints":
        try:
            return detect(shapes, header.metadata).label()
        except UnknownLayout:
            return "unknown layout: " + ("; ".join(recognised(shapes)) or "nothing recognised")
    if kind == "loras":
        return "LoRA" + _context_family(shapes, ("to_k", "k_proj", "attn2_to_k"), "lora_down")
    if kind == "embeddings":
        return "textual inversion" + _embedding_family(shapes)
    if kind == "vae":
        latent = shapes.get("quant_conv.weight") or shapes.get("first_stage_model.quant_conv.weight")
        return f"VAE, {latent[0] // 2} latent channels" if latent else "VAE (unrecognised layout)"
    return f"{len(shapes)} tensors"


def _control(path: Path) -> str:
    """'SD 1.x ControlNet (ldm layout)', 'SDXL T2I-Adapter (diffusers folder)'..."""
    try:
        found = controlnet.probe(path)
    except (OSError, WeightFileError, controlnet.ControlFileError) as exc:
        return f"unrecognised: {exc}"
    layout = "diffusers folder" if found.layout == "folder" else f"{found.layout} layout"
    return f"{found.label()} ({layout})"


def _folder_family(folder: Path) -> str:
    """The family loading would take the folder for (one detection for both: ``family_probe``)."""
    family = folder_family(folder)
    return f", {family.label}" if family else ""


def _context_family(shapes: dict[str, tuple[int, ...]], parts: tuple[str, ...], down: str) -> str:
    """The family a LoRA targets, from the input width of a cross-attention key projection."""
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in shapes):
        return ", SDXL"
    for key, shape in shapes.items():
        if "attn2" in key and any(p in key for p in parts) and down in key and len(shape) == 2:
            family = _BY_CONTEXT.get(shape[1])
            return f", {family.label}" if family else f", context {shape[1]}"
    return ""


def _embedding_family(shapes: dict[str, tuple[int, ...]]) -> str:
    if "clip_g" in shapes and "clip_l" in shapes:
        return ", SDXL"
    for shape in shapes.values():
        family = _BY_CONTEXT.get(shape[-1]) if shape else None
        if family:
            return f", {family.label}, {shape[0] if len(shape) > 1 else 1} vectors"
    return ""
