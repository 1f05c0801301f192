"""Where each weight of a diffusers SD3 / Flux transformer and of a T5 encoder lives in the original files.

As ``ldm_keys`` does for UNets: each mapping turns a module's own parameter name into a ``Source``
(the key in the file and how to reshape it), so one table reads the files users have and writes the
tiny test files. The layouts are Stability's MMDiT (``joint_blocks.N.x_block`` /
``context_block``, fused q/k/v, shift-before-scale AdaLN at the end) and Black Forest Labs' Flux
(``double_blocks`` / ``single_blocks``; a single block's q, k, v and MLP input are one ``linear1``),
the layouts diffusers' ``single_file_utils`` and ComfyUI convert; unlike diffusers' Flux converter
these read the widths from the config, so models of any size load.
"""

from __future__ import annotations

import re
from typing import Any

from sdflow.models.ldm_keys import Mapping, Source

_QKV = {"to_q": 0, "to_k": 1, "to_v": 2, "add_q_proj": 0, "add_k_proj": 1, "add_v_proj": 2}


def _table(prefix: str, entries: dict[str, str]) -> dict[str, Source]:
    return {name: Source(prefix + key) for name, key in entries.items()}


# -- SD3 / SD3.5 (MMDiT) ---------------------------------------------------------------------------

_SD3_TOP = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj": "x_embedder.proj",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
}
# one joint block's names: diffusers -> (x_block | context_block) part
_SD3_BLOCK = {
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn.norm_q": "x_block.attn.ln_q",
    "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q",
    "attn.norm_added_k": "context_block.attn.ln_k",
    "attn2.to_out.0": "x_block.attn2.proj",
    "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}


def sd3_mapping(config: dict[str, Any], prefix: str = "model.diffusion_model.") -> Mapping:
    """SD3Transformer2DModel names -> MMDiT names under ``prefix``."""
    last = int(config["num_layers"]) - 1

    def source(name: str) -> Source | None:
        if name == "pos_embed.pos_embed":
            return Source(prefix + "pos_embed")
        stem, _, leaf = name.rpartition(".")
        if stem == "norm_out.linear":
            return Source(f"{prefix}final_layer.adaLN_modulation.1.{leaf}", "swap")
        if stem in _SD3_TOP:
            return Source(f"{prefix}{_SD3_TOP[stem]}.{leaf}")
        m = re.fullmatch(r"transformer_blocks\.(\d+)\.(attn2?)\.(\w+)", stem)
        if m and m[3] in _QKV:
            part = "context_block.attn" if m[3].startswith("add_") else f"x_block.{m[2]}"
            return Source(f"{prefix}joint_blocks.{m[1]}.{part}.qkv.{leaf}", "chunk", _QKV[m[3]])
        m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", stem)
        if m is None or m[2] not in _SD3_BLOCK:
            return None
        key = f"{prefix}joint_blocks.{m[1]}.{_SD3_BLOCK[m[2]]}.{leaf}"
        # the last block's context stream only modulates (AdaLayerNormContinuous: scale, shift)
        swapped = int(m[1]) == last and m[2] == "norm1_context.linear"
        return Source(key, "swap" if swapped else "same")

    return source


# -- Flux (Black Forest Labs' layout) --------------------------------------------------------------

_FLUX_TOP = {
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "context_embedder": "txt_in",
    "x_embedder": "img_in",
    "proj_out": "final_layer.linear",
}
_FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
}
_FLUX_NORMS = {
    "attn.norm_q": "img_attn.norm.query_norm",
    "attn.norm_k": "img_attn.norm.key_norm",
    "attn.norm_added_q": "txt_attn.norm.query_norm",
    "attn.norm_added_k": "txt_attn.norm.key_norm",
}
_FLUX_SINGLE = {"norm.linear": "modulation.lin", "proj_out": "linear2"}


def flux_mapping(config: dict[str, Any], prefix: str = "") -> Mapping:
    """FluxTransformer2DModel names -> BFL names under ``prefix`` (BFL ships them bare; ComfyUI's
    all-in-one files under ``model.diffusion_model.``)."""
    width = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    mlp = int(width * float(config.get("mlp_ratio", 4.0)))
    single_rows = 3 * width + mlp  # linear1: q, k, v, then the MLP's input projection

    def source(name: str) -> Source | None:
        stem, _, leaf = name.rpartition(".")
        if stem == "norm_out.linear":
            return Source(f"{prefix}final_layer.adaLN_modulation.1.{leaf}", "swap")
        if stem in _FLUX_TOP:
            return Source(f"{prefix}{_FLUX_TOP[stem]}.{leaf}")
        if m := re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", stem):
            block, part = f"{prefix}double_blocks.{m[1]}.", m[2]
            if part.removeprefix("attn.") in _QKV:
                stream = "txt" if "add_" in part else "img"
                return Source(f"{block}{stream}_attn.qkv.{leaf}", "chunk", _QKV[part.removeprefix("attn.")])
            if part in _FLUX_NORMS:
                return Source(f"{block}{_FLUX_NORMS[part]}.scale")
            return Source(f"{block}{_FLUX_DOUBLE[part]}.{leaf}") if part in _FLUX_DOUBLE else None
        if m := re.fullmatch(r"single_transformer_blocks\.(\d+)\.(.+)", stem):
            block, part = f"{prefix}single_blocks.{m[1]}.", m[2]
            if part in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"):
                start = width * ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp").index(part)
                return Source(f"{block}linear1.{leaf}", "rows", start, single_rows)
            if part in ("attn.norm_q", "attn.norm_k"):
                return Source(f"{block}norm.{'query' if part.endswith('q') else 'key'}_norm.scale")
            return Source(f"{block}{_FLUX_SINGLE[part]}.{leaf}") if part in _FLUX_SINGLE else None
        return None

    return source


# -- T5 encoder ------------------------------------------------------------------------------------


def t5_mapping(prefix: str = "") -> Mapping:
    """transformers T5EncoderModel names -> the same names under ``prefix``; the encoder's token
    embedding is the shared one (files keep ``shared.weight`` only)."""

    def source(name: str) -> Source | None:
        if name == "encoder.embed_tokens.weight":
            return Source(prefix + "shared.weight")
        return Source(prefix + name)

    return source
