"""Handlers for prompting with a picture: ComfyUI's CLIP vision and unCLIP nodes, and the common
IP-Adapter nodes of ComfyUI_IPAdapter_plus (IPAdapterModelLoader, IPAdapterApply, IPAdapterAdvanced,
IPAdapter)."""

from __future__ import annotations

from typing import Any

from sdflow.formats.comfy_json import ComfyNode, Ref
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port, Problem
from sdflow.interop.comfy.registry import handler

# ComfyUI_IPAdapter_plus's weight types that are diffusers' plain scale (the rest are approximated)
LINEAR_WEIGHTS = ("linear", "original", "standard")


@handler("CLIPVisionLoader", widgets=("clip_name",))
def clip_vision_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadCLIPVision of the file name (looked up in the model folders' clip_vision folders)."""
    nid = c.add("clip_vision", node.id, "LoadCLIPVision", file=str(c.const(node, "clip_name")))
    return [Port(Link(nid, "clip_vision"))]


@handler("CLIPVisionEncode", widgets=("crop",))
def clip_vision_encode(c: Converter, node: ComfyNode) -> list[Port]:
    """CLIPVisionEncode (ComfyUI's crop: center or none; older workflows have no widget: center)."""
    crop = str(node.inputs.get("crop") or "center")
    if crop not in ("center", "none"):
        c.refuse(node, f"crop must be center or none, got {crop!r}")
        crop = "center"
    nid = c.add(
        "clip_vision_encode",
        node.id,
        "CLIPVisionEncode",
        clip_vision=c.port(node, "clip_vision").link,
        image=c.port(node, "image").link,
        crop=crop,
    )
    return [Port(Link(nid, "clip_vision_output"))]


@handler("unCLIPCheckpointLoader", widgets=("ckpt_name",))
def unclip_checkpoint_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadCheckpoint, whose fourth output is an unCLIP checkpoint's CLIP vision model."""
    nid = c.add("checkpoint", node.id, "LoadCheckpoint", checkpoint=c.const(node, "ckpt_name"))
    return [Port(Link(nid, name)) for name in ("model", "clip", "vae", "clip_vision")]


@handler("unCLIPConditioning", widgets=("strength", "noise_augmentation"))
def unclip_conditioning(c: Converter, node: ComfyNode) -> list[Port]:
    """unCLIPConditioning (the augmentation's noise has its own seed, 0; ComfyUI draws it from the
    sampler's seed)."""
    nid = c.add(
        "unclip",
        node.id,
        "unCLIPConditioning",
        conditioning=c.port(node, "conditioning").link,
        clip_vision_output=c.port(node, "clip_vision_output").link,
        strength=c.number(node, "strength", 1.0, float),
        noise_augmentation=c.number(node, "noise_augmentation", 0.0, float),
    )
    return [Port(Link(nid, "conditioning"))]


@handler("IPAdapterModelLoader", widgets=("ipadapter_file",))
def ipadapter_model_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadIPAdapter of the file name (looked up in the model folders' ipadapter folders)."""
    name = str(c.const(node, "ipadapter_file"))
    nid = c.add("ipadapter", node.id, "LoadIPAdapter", file=name, allow_pickle=name.endswith(".bin"))
    if name.endswith(".bin"):
        c.notes.append(f"node {node.id} (IPAdapterModelLoader): {name} is a pickle, allowed (weights only)")
    return [Port(Link(nid, "ip_adapter"))]


@handler("IPAdapterApply", widgets=("weight", "noise", "weight_type", "start_at", "end_at", "unfold_batch"))
def ipadapter_apply(c: Converter, node: ComfyNode) -> list[Port]:
    """ApplyIPAdapter (ComfyUI_IPAdapter_plus's first node): its noise (a noised negative picture)
    is not applied, the negative is diffusers' zeros."""
    if c.number(node, "noise", 0.0, float) != 0:
        _note(c, node, "noise is not applied: the negative side reads no picture, as diffusers")
    return _apply(c, node)


@handler(
    "IPAdapterAdvanced",
    widgets=("weight", "weight_type", "combine_embeds", "start_at", "end_at", "embeds_scaling"),
)
def ipadapter_advanced(c: Converter, node: ComfyNode) -> list[Port]:
    """ApplyIPAdapter (ComfyUI_IPAdapter_plus v2); 'V only' scaling is the plain weight, the others
    and combine modes other than concat are approximated (a note says so)."""
    scaling = str(node.inputs.get("embeds_scaling") or "V only")
    if scaling != "V only":
        _note(c, node, f"embeds_scaling {scaling!r} is approximated as 'V only' (the plain weight)")
    combine = str(node.inputs.get("combine_embeds") or "concat")
    if combine != "concat":
        _note(c, node, f"combine_embeds {combine!r} is approximated as concat (each picture's tokens)")
    if isinstance(node.inputs.get("image_negative"), Ref):
        _note(c, node, "image_negative is not used: the negative side reads no picture, as diffusers")
    return _apply(c, node)


@handler("IPAdapter", widgets=("weight", "start_at", "end_at", "weight_type"))
def ipadapter_simple(c: Converter, node: ComfyNode) -> list[Port]:
    """ApplyIPAdapter (ComfyUI_IPAdapter_plus v2's simple node): it needs the CLIP vision model of
    an IPAdapterUnifiedLoader, which picks files by preset; sdflow needs them named."""
    if "clip_vision" not in node.inputs:
        raise Problem(
            "this node takes its CLIP vision model from an IPAdapterUnifiedLoader preset: use "
            "IPAdapterModelLoader, CLIPVisionLoader and IPAdapterAdvanced instead (files named)"
        )
    return _apply(c, node)


def _apply(c: Converter, node: ComfyNode) -> list[Port]:
    if isinstance(node.inputs.get("attn_mask"), Ref):
        _note(c, node, "attn_mask is not applied: the picture acts on the whole image")
    weight_type = str(node.inputs.get("weight_type") or "linear")
    if weight_type not in LINEAR_WEIGHTS:
        _note(c, node, f"weight_type {weight_type!r} is applied as linear (one weight for every layer)")
    fields: dict[str, Any] = {
        "model": c.port(node, "model").link,
        "ip_adapter": c.port(node, "ipadapter").link,
        "clip_vision": c.port(node, "clip_vision").link,
        "image": c.port(node, "image").link,
        "weight": c.number(node, "weight", 1.0, float),
        "start_percent": c.number(node, "start_at", 0.0, float),
        "end_percent": c.number(node, "end_at", 1.0, float),
    }
    nid = c.add("apply_ipadapter", node.id, "ApplyIPAdapter", **fields)
    return [Port(Link(nid, "model"))]


def _note(c: Converter, node: ComfyNode, text: str) -> None:
    c.notes.append(f"node {node.id} ({node.type}): {text}")
