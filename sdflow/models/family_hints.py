"""The family a LoRA, a textual inversion or a ControlNet was made for, told by the width of the text
conditioning its weights read (their files carry no family)."""

from __future__ import annotations

from sdflow.models.families import FAMILIES, SD2, SD15, SDXL, Family

Shapes = dict[str, tuple[int, ...]]

_KEY_PROJECTIONS = ("to_k", "k_proj", "attn2_to_k")  # a cross-attention key projection's names in LoRAs
_BY_CONTEXT: dict[int, Family] = {f.context_dim: f for f in FAMILIES.values() if f.text_encoders == 1}


def family_by_context(width: int) -> Family | None:
    """The one-encoder family whose cross-attention reads conditioning ``width`` wide (768: SD 1.x)."""
    return _BY_CONTEXT.get(width)


def control_family(sdxl_embedding: bool, context_dim: int | None) -> Family:
    """The family a ControlNet steers: SDXL with SDXL's added (text_time) embedding, else SD 2.x or
    SD 1.x by its cross-attention width (a tiny model's other widths: SD 1.x, as for UNet folders)."""
    if sdxl_embedding:
        return SDXL
    return SD2 if context_dim == SD2.context_dim else SD15


def lora_family(shapes: Shapes) -> tuple[Family | None, int | None]:
    """The family a LoRA targets, and the input width of the cross-attention key projection it was
    told by (SDXL: by its second text encoder's keys; (None, None): nothing tells)."""
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in shapes):
        return SDXL, None
    for key, shape in shapes.items():
        if (
            "attn2" in key
            and any(p in key for p in _KEY_PROJECTIONS)
            and "lora_down" in key
            and len(shape) == 2
        ):
            return family_by_context(shape[1]), shape[1]
    return None, None


def embedding_family(shapes: Shapes) -> tuple[Family | None, int | None]:
    """The family a textual inversion was made for, and its vector count (None for SDXL's pair)."""
    if "clip_g" in shapes and "clip_l" in shapes:
        return SDXL, None
    for shape in shapes.values():
        family = family_by_context(shape[-1]) if shape else None
        if family:
            return family, shape[0] if len(shape) > 1 else 1
    return None, None
