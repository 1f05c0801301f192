"""Handlers for ComfyUI's split-layout loaders of SD3 / Flux: the diffusion model alone (UNETLoader) and
text encoders alone (CLIPLoader, DualCLIPLoader, TripleCLIPLoader)."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler

# ComfyUI's weight_dtype choices -> LoadDiffusionModel's ("fast" fp8 matmuls: the same storage here)
WEIGHT_DTYPES = {"default": "default", "fp8_e4m3fn": "fp8_e4m3fn", "fp8_e4m3fn_fast": "fp8_e4m3fn",
                 "fp8_e5m2": "fp8_e5m2"}  # fmt: skip
KINDS = ("sd3", "flux")


@handler("UNETLoader", widgets=("unet_name", "weight_dtype"))
def unet_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadDiffusionModel (the name resolves through the diffusion_models / unet folders)."""
    dtype = str(c.const(node, "weight_dtype", "default"))
    if dtype not in WEIGHT_DTYPES:
        c.refuse(node, f"weight_dtype '{dtype}' is not one of {', '.join(WEIGHT_DTYPES)}")
    file = str(c.const(node, "unet_name"))
    nid = c.add(
        "unet", node.id, "LoadDiffusionModel", file=file, weight_dtype=WEIGHT_DTYPES.get(dtype, "default")
    )
    return [Port(Link(nid, "model"))]


def _encoders(c: Converter, node: ComfyNode, names: tuple[str, ...], kind: str) -> list[Port]:
    if kind not in KINDS:
        c.refuse(node, f"type '{kind}': sdflow loads text encoder files for {' and '.join(KINDS)} only")
        kind = "flux"
    files = [str(c.const(node, name)) for name in names]
    nid = c.add("clip", node.id, "LoadTextEncoders", files=files, kind=kind)
    return [Port(Link(nid, "clip"))]


@handler("DualCLIPLoader", widgets=("clip_name1", "clip_name2", "type", "device"))
def dual_clip_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadTextEncoders with both files (Flux: clip_l + t5xxl)."""
    return _encoders(c, node, ("clip_name1", "clip_name2"), str(c.const(node, "type", "flux")))


@handler("TripleCLIPLoader", widgets=("clip_name1", "clip_name2", "clip_name3"))
def triple_clip_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadTextEncoders for SD3 (clip_l, clip_g, t5xxl)."""
    return _encoders(c, node, ("clip_name1", "clip_name2", "clip_name3"), "sd3")


@handler("CLIPLoader", widgets=("clip_name", "type", "device"))
def clip_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """One text encoder file: only an all-in-one encoder file makes SD3's or Flux's encoders here."""
    return _encoders(c, node, ("clip_name",), str(c.const(node, "type", "stable_diffusion")))
