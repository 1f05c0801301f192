"""Handlers for ComfyUI's upscale-model nodes: UpscaleModelLoader and ImageUpscaleWithModel (which
tiles at 512 pixels with 32 of overlap, UpscaleImage's defaults)."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler


@handler("UpscaleModelLoader", widgets=("model_name",))
def upscale_model_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadUpscaleModel of the file name (looked up in the model folders' upscale_models folders)."""
    nid = c.add("upscaler", node.id, "LoadUpscaleModel", file=str(c.const(node, "model_name")))
    return [Port(Link(nid, "upscale_model"))]


@handler("ImageUpscaleWithModel", widgets=())
def image_upscale_with_model(c: Converter, node: ComfyNode) -> list[Port]:
    """UpscaleImage of the image with the model, in ComfyUI's 512-pixel tiles."""
    nid = c.add(
        "upscale",
        node.id,
        "UpscaleImage",
        image=c.port(node, "image").link,
        upscale_model=c.port(node, "upscale_model").link,
    )
    return [Port(Link(nid, "image"))]
