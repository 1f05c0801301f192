"""Where each weight of a diffusers / transformers module lives in an original (LDM) single file.

Each function maps a module's own parameter name to a ``Source``: the key in the single file and how
to reshape it. The mapping is written from the diffusers side, so one table serves both directions:
loading a single file (read ``Source.key``, apply ``Source.to_module``) and writing one for tests
(``Source.to_file``). The rules follow the layouts of CompVis' ``ldm`` / Stability's ``sgm`` code,
which diffusers' ``single_file_utils`` and ComfyUI also convert.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Source:
    """A module weight's key in the file, and the reshaping between the two layouts."""

    key: str
    # "same" | "squeeze" (conv 1x1 <-> linear) | "chunk" (fused q/k/v) | "transpose" | "rows" (one
    # run of rows of a fused tensor whose parts differ in size) | "swap" (halves stored the other way
    # round: the original AdaLN's shift, scale against diffusers' scale, shift)
    kind: str = "same"
    index: int = 0  # for "chunk": which third (q, k, v); for "rows": the first row
    total: int = 0  # for "rows": the fused tensor's row count

    @property
    def fused(self) -> bool:
        """Several module weights share this one file tensor."""
        return self.kind in ("chunk", "rows")

    def file_shape(self, module_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape this weight has in the file."""
        if self.kind == "squeeze":
            return (*module_shape, 1, 1)
        if self.kind == "chunk":
            return (module_shape[0] * 3, *module_shape[1:])
        if self.kind == "rows":
            return (self.total, *module_shape[1:])
        if self.kind == "transpose":
            return tuple(reversed(module_shape))
        return module_shape

    def start(self, module_shape: tuple[int, ...]) -> int:
        """For a fused tensor: the first of this weight's rows."""
        return self.index * module_shape[0] if self.kind == "chunk" else self.index

    def to_module(self, tensor: torch.Tensor, module_shape: tuple[int, ...]) -> torch.Tensor:
        """The file's tensor reshaped for the module (views where possible: no copy)."""
        if self.fused:
            start = self.start(module_shape)
            return tensor[start : start + module_shape[0]]
        if self.kind == "transpose":
            return tensor.t().contiguous()
        if self.kind == "swap":
            return swap_halves(tensor)
        return tensor.reshape(module_shape)


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """The two halves of the first dimension exchanged (its own inverse)."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first])


Mapping = Callable[[str], Source | None]


# -- UNet ---------------------------------------------------------------------------------------

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}  # fmt: skip
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    # an unCLIP UNet's class embedding (the image embeds): the same label_emb Sequential as SDXL's adm
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def unet_mapping(config: dict[str, Any], prefix: str = "model.diffusion_model.") -> Mapping:
    """UNet2DConditionModel names -> LDM ``input_blocks`` / ``middle_block`` / ``output_blocks``."""
    per_block = config["layers_per_block"]
    per_block = per_block[0] if isinstance(per_block, list | tuple) else per_block
    up_has_attention = ["CrossAttn" in t for t in config["up_block_types"]]

    def resnet(rest: str) -> str:
        part, _, tail = rest.partition(".")
        return f"{_RESNET.get(part, part)}.{tail}"

    def source(name: str) -> Source | None:
        for diffusers, ldm in _UNET_TOP.items():
            if name.startswith(diffusers + "."):
                return Source(prefix + ldm + name[len(diffusers) :])
        if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = 1 + block * (per_block + 1) + layer
            tail = resnet(rest) if kind == "resnets" else rest
            return Source(f"{prefix}input_blocks.{index}.{0 if kind == 'resnets' else 1}.{tail}")
        if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", name):
            return Source(f"{prefix}input_blocks.{(int(m[1]) + 1) * (per_block + 1)}.0.op.{m[2]}")
        if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", name):
            return Source(f"{prefix}middle_block.{2 * int(m[1])}.{resnet(m[2])}")
        if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", name):
            return Source(f"{prefix}middle_block.1.{m[1]}")
        if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", name):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            index = block * (per_block + 1) + layer
            tail = resnet(rest) if kind == "resnets" else rest
            return Source(f"{prefix}output_blocks.{index}.{0 if kind == 'resnets' else 1}.{tail}")
        if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", name):
            block = int(m[1])
            index = block * (per_block + 1) + per_block
            return Source(f"{prefix}output_blocks.{index}.{2 if up_has_attention[block] else 1}.conv.{m[2]}")
        return None

    return source


# -- VAE ----------------------------------------------------------------------------------------

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_mapping(config: dict[str, Any], prefix: str = "first_stage_model.") -> Mapping:
    """AutoencoderKL names -> LDM ``encoder.down.N.block.M`` / ``decoder.up.N...`` names."""
    blocks = len(config["block_out_channels"])

    def source(name: str) -> Source | None:
        name = name.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", name):
            part = _VAE_ATTENTION.get(m[2])
            if part is None:
                return None
            kind = "squeeze" if m[2] != "group_norm" and m[3] == "weight" else "same"
            return Source(f"{prefix}{m[1]}.mid.attn_1.{part}.{m[3]}", kind)
        name = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", name)
        name = re.sub(r"encoder\.down_blocks\.(\d+)", r"encoder.down.\1", name)
        name = re.sub(r"decoder\.up_blocks\.(\d+)", lambda m: f"decoder.up.{blocks - 1 - int(m[1])}", name)
        name = name.replace(".resnets.", ".block.")
        name = name.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        return Source(prefix + name)

    return source


# -- text encoders ------------------------------------------------------------------------------


def clip_mapping(prefix: str, shapes: dict[str, tuple[int, ...]] | None = None) -> Mapping:
    """transformers CLIPTextModel names -> the same names under ``prefix`` + ``text_model.``
    (older files lack the ``text_model.`` level; with ``shapes`` given, either is accepted)."""
    legacy = shapes is not None and not any(k.startswith(prefix + "text_model.") for k in shapes)

    def source(name: str) -> Source | None:
        if name.startswith("text_projection."):
            return Source(prefix + name)
        name = name.removeprefix("text_model.")
        return Source(prefix + name if legacy else f"{prefix}text_model.{name}")

    return source


_OPENCLIP_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
                   "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}  # fmt: skip
_OPENCLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def _openclip_block(prefix: str, name: str, layers: str) -> Source | None:
    """One transformer layer's weight (``{layers}.N.part.weight`` in transformers' CLIP names) in
    OpenCLIP's ``transformer.resblocks.N`` layout, where q, k and v are one fused ``in_proj``."""
    m = re.fullmatch(rf"{re.escape(layers)}\.(\d+)\.(.+)\.(weight|bias)", name)
    if m is None:
        return None
    block = f"{prefix}transformer.resblocks.{m[1]}"
    if m[2] in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        index = "qkv".index(m[2][len("self_attn.")])
        return Source(f"{block}.attn.in_proj_{m[3]}", "chunk", index)
    part = _OPENCLIP_LAYER.get(m[2])
    return Source(f"{block}.{part}.{m[3]}") if part else None


def openclip_mapping(prefix: str) -> Mapping:
    """transformers CLIPTextModel(WithProjection) names -> OpenCLIP's ``transformer.resblocks.N``
    layout, where q, k and v are one fused ``in_proj`` and the projection is stored transposed."""

    def source(name: str) -> Source | None:
        name = name.removeprefix("text_model.")
        if name in _OPENCLIP_TOP:
            return Source(prefix + _OPENCLIP_TOP[name])
        if name == "text_projection.weight":
            return Source(prefix + "text_projection", "transpose")
        return _openclip_block(prefix, name, "encoder.layers")

    return source


_OPENCLIP_VISUAL_TOP = {
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "ln_pre.bias",
    "vision_model.post_layernorm.weight": "ln_post.weight",
    "vision_model.post_layernorm.bias": "ln_post.bias",
}


def openclip_vision_mapping(prefix: str) -> Mapping:
    """transformers CLIPVisionModelWithProjection names -> the ``visual`` tower of an OpenCLIP (or
    OpenAI CLIP: the same names) model under ``prefix``: ``conv1``, ``ln_pre``, ``transformer.resblocks.N``
    with fused q/k/v, ``ln_post`` and the projection ``proj`` stored transposed. SD 2.1 unCLIP files keep
    their image encoder so, under ``embedder.model.visual.``."""

    def source(name: str) -> Source | None:
        if name in _OPENCLIP_VISUAL_TOP:
            return Source(prefix + _OPENCLIP_VISUAL_TOP[name])
        if name == "visual_projection.weight":
            return Source(prefix + "proj", "transpose")
        return _openclip_block(prefix, name, "vision_model.encoder.layers")

    return source
