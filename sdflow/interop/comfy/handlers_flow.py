"""Handlers for ComfyUI's SD3 / Flux sampling nodes: FluxGuidance, ModelSamplingSD3, ModelSamplingFlux
(same-named sdflow nodes) and EmptySD3LatentImage (EmptyLatent: AddNoise gives an empty latent the
model's 16 channels)."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.handlers_utilities import same_named
from sdflow.interop.comfy.registry import handler


@handler("FluxGuidance", widgets=("guidance",))
def flux_guidance(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("conditioning",), {"guidance": (3.5, float)}, ("conditioning",))


@handler("ModelSamplingSD3", widgets=("shift",))
def model_sampling_sd3(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model",), {"shift": (3.0, float)}, ("model",))


@handler("ModelSamplingFlux", widgets=("max_shift", "base_shift", "width", "height"))
def model_sampling_flux(c: Converter, node: ComfyNode) -> list[Port]:
    numbers = {
        "max_shift": (1.15, float),
        "base_shift": (0.5, float),
        "width": (1024, int),
        "height": (1024, int),
    }
    return same_named(c, node, ("model",), numbers, ("model",))


@handler("EmptySD3LatentImage", widgets=("width", "height", "batch_size"))
def empty_sd3_latent(c: Converter, node: ComfyNode) -> list[Port]:
    """EmptyLatent of the node's size and batch (16 channels once AddNoise meets the model)."""
    size = {k: c.number(node, k, d, int) for k, d in (("width", 1024), ("height", 1024), ("batch_size", 1))}
    return [Port(Link(c.add("empty", node.id, "EmptyLatent", **size), "latent"))]


@handler("CLIPTextEncodeFlux", widgets=("clip_l", "t5xxl", "guidance"))
def clip_text_encode_flux(c: Converter, node: ComfyNode) -> list[Port]:
    """CLIPEncode (clip_l -> text, t5xxl -> t5_text) followed by FluxGuidance."""
    clip = c.port(node, "clip").link
    texts = {"text": str(c.const(node, "clip_l", "")), "t5_text": str(c.const(node, "t5xxl", ""))}
    encoded = c.add("prompt", node.id, "CLIPEncode", clip=clip, **texts)
    guidance = c.number(node, "guidance", 3.5, float)
    nid = c.add(
        "guidance", node.id, "FluxGuidance", conditioning=Link(encoded, "conditioning"), guidance=guidance
    )
    return [Port(Link(nid, "conditioning"))]


@handler("CLIPTextEncodeSD3", widgets=("clip_l", "clip_g", "t5xxl", "empty_padding"))
def clip_text_encode_sd3(c: Converter, node: ComfyNode) -> list[Port]:
    """CLIPEncode (clip_l -> text, clip_g -> clip_g_text where it differs, t5xxl -> t5_text)."""
    clip_l, clip_g = str(c.const(node, "clip_l", "")), str(c.const(node, "clip_g", ""))
    own_g = {"clip_g_text": clip_g} if clip_g != clip_l else {}
    if str(c.const(node, "empty_padding", "none")) != "none":
        c.notes.append(
            f"node {node.id} (CLIPTextEncodeSD3): empty_padding is not mapped (T5 pads as diffusers)"
        )
    t5 = str(c.const(node, "t5xxl", ""))
    nid = c.add(
        "prompt", node.id, "CLIPEncode", clip=c.port(node, "clip").link, text=clip_l, t5_text=t5, **own_g
    )
    return [Port(Link(nid, "conditioning"))]
