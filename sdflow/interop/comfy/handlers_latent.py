"""Handlers for ComfyUI's latent nodes: empty latents, VAE encoding (with inpainting masks),
decoding and latent upscaling."""

from __future__ import annotations

from typing import Any

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port, Problem
from sdflow.interop.comfy.registry import handler

LATENT_MODES = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}


def upscale_mode(c: Converter, node: ComfyNode, modes: dict[str, str]) -> str:
    """sdflow's name for the node's upscale_method; other methods and cropping are refused."""
    method = str(c.const(node, "upscale_method", "nearest-exact"))
    if method not in modes:
        c.refuse(node, f"upscale_method '{method}' is not supported (sdflow maps: {', '.join(modes)})")
    if str(node.inputs.get("crop", "disabled")) != "disabled":
        c.refuse(node, "crop 'center' is not supported (sdflow resizes without cropping)")
    return modes.get(method, "nearest")


@handler("EmptyLatentImage", widgets=("width", "height", "batch_size"))
def empty_latent(c: Converter, node: ComfyNode) -> list[Port]:
    """EmptyLatent of the node's size and batch."""
    size = {k: c.number(node, k, d, int) for k, d in (("width", 512), ("height", 512), ("batch_size", 1))}
    return [Port(Link(c.add("empty", node.id, "EmptyLatent", **size), "latent"))]


@handler("VAEEncode", widgets=())
def vae_encode(c: Converter, node: ComfyNode, mask: Link | None = None) -> list[Port]:
    """VAEEncode to the posterior's mode, as ComfyUI encodes (no randomness)."""
    fields: dict[str, Any] = {"vae": c.port(node, "vae").link, "image": c.port(node, "pixels").link}
    if mask is not None:
        fields["mask"] = mask
    fields["posterior"] = "mode"
    nid = c.add("encode", node.id, "VAEEncode", **fields)
    return [Port(Link(nid, "latent"), encoder=nid)]


@handler("VAEEncodeForInpaint", widgets=("grow_mask_by",))
def vae_encode_for_inpaint(c: Converter, node: ComfyNode) -> list[Port]:
    """VAEEncode with the mask (grow_mask_by is not applied: a note says so)."""
    grow = c.number(node, "grow_mask_by", 6, int)
    if grow:
        c.notes.append(f"node {node.id} (VAEEncodeForInpaint): grow_mask_by {grow} ignored (mask used as is)")
    return vae_encode(c, node, c.port(node, "mask").link)


@handler("SetLatentNoiseMask", widgets=())
def set_latent_noise_mask(c: Converter, node: ComfyNode) -> list[Port]:
    """The mask of the VAEEncode whose latent it masks (that VAEEncode is replaced)."""
    latent, mask = c.port(node, "samples"), c.port(node, "mask")
    if latent.unknown:
        return [latent]
    spec = c.workflow.nodes.get(latent.encoder or "")
    if spec is None or "mask" in spec.fields:
        raise Problem("supported only on the latent of a VAEEncode without a mask")
    fields = {**spec.fields, "mask": mask.link}
    c.replaced.append(latent.encoder or "")
    nid = c.add("masked", node.id, "VAEEncode", **fields)
    return [Port(Link(nid, "latent"), encoder=nid)]


@handler("VAEDecode", widgets=())
def vae_decode(c: Converter, node: ComfyNode) -> list[Port]:
    """VAEDecode."""
    nid = c.add(
        "decode", node.id, "VAEDecode", vae=c.port(node, "vae").link, latent=c.port(node, "samples").link
    )
    return [Port(Link(nid, "image"))]


@handler("LatentUpscale", widgets=("upscale_method", "width", "height", "crop"))
def latent_upscale(c: Converter, node: ComfyNode) -> list[Port]:
    """LatentUpscale to a width and height."""
    mode = upscale_mode(c, node, LATENT_MODES)
    size = {k: c.number(node, k, 0, int) for k in ("width", "height")}
    nid = c.add("upscale", node.id, "LatentUpscale", latent=c.port(node, "samples").link, **size, mode=mode)
    return [Port(Link(nid, "latent"))]
