"""Which family a diffusers checkpoint folder holds, from its model_index.json and UNet config.

SDXL's UNet adds a ``text_time`` embedding: its input is the pooled text embedding plus one
``addition_time_embed_dim``-wide vector per time id, 6 ids for the base (sizes and crop), 5 for the
refiner (sizes and aesthetic score). Only JSON files are read, so this is cheap enough for prechecks.
"""

from __future__ import annotations

from typing import Any

from sdflow.models.families import SD2, SD15, SDXL, SDXL_REFINER, Family


class UnknownFamily(ValueError):
    """The files describe no family sdflow knows how to run."""


def family_of(index: dict[str, Any], unet: dict[str, Any], pooled_dim: int | None) -> Family:
    """The family of a checkpoint with this model_index, UNet config and pooled-embedding width
    (text_encoder_2's projection_dim; None when it has no second encoder)."""
    has_clip_l = listed(index.get("text_encoder"))
    has_bigg = listed(index.get("text_encoder_2"))
    if unet.get("addition_embed_type") != "text_time":
        if has_bigg:
            raise UnknownFamily("it has a second text encoder but its UNet has no SDXL text_time embedding")
        return SD2 if unet.get("cross_attention_dim") == SD2.context_dim else SD15
    if not has_bigg or pooled_dim is None:
        raise UnknownFamily("its UNet is SDXL's (text_time embedding) but it has no text_encoder_2")
    time_dim = unet.get("addition_time_embed_dim") or 0
    ids = (unet.get("projection_class_embeddings_input_dim") or 0) - pooled_dim
    count = ids // time_dim if time_dim and ids % time_dim == 0 else None
    if count == SDXL.time_id_count and has_clip_l:
        return SDXL
    if count == SDXL_REFINER.time_id_count:
        return SDXL_REFINER
    raise UnknownFamily(
        f"its UNet's text_time embedding takes {unet.get('projection_class_embeddings_input_dim')} "
        f"values, which fits neither SDXL base (pooled {pooled_dim} + 6 x {time_dim}, two text "
        f"encoders) nor the refiner (pooled + 5 x {time_dim})"
    )


def listed(entry: Any) -> bool:
    """model_index lists a missing component as [null, null]."""
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None
