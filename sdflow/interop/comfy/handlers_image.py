"""Handlers for ComfyUI's image nodes: loading, saving, scaling, Canny edges and mask conversions."""

from __future__ import annotations

import re

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.handlers_latent import LATENT_MODES, upscale_mode
from sdflow.interop.comfy.registry import handler

IMAGE_MODES = {**LATENT_MODES, "area": "box", "lanczos": "lanczos"}


@handler("LoadImage", widgets=("image", "upload"))
def load_image(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadImage of the file name (without ComfyUI's ' [input]' suffix), in --image-dir if given."""
    name = re.sub(r" \[(input|output|temp)\]$", "", str(c.const(node, "image")))
    nid = c.add("image", node.id, "LoadImage", path=c.image_path(name))
    return [Port(Link(nid, "image")), Port(Link(nid, "mask"))]


@handler("SaveImage", widgets=("filename_prefix",))
def save_image(c: Converter, node: ComfyNode, prefix: str | None = None) -> list[Port]:
    """SaveImage with the node's filename_prefix (ComfyUI's %...% patterns are kept as text)."""
    prefix = prefix or str(c.const(node, "filename_prefix", "ComfyUI"))
    if "%" in prefix:
        c.notes.append(
            f"node {node.id} (SaveImage): '%...%' in filename_prefix '{prefix}' is written as it is"
        )
    c.add("save", node.id, "SaveImage", image=c.port(node, "images").link, filename_prefix=prefix)
    return []


@handler("PreviewImage", widgets=())
def preview_image(c: Converter, node: ComfyNode) -> list[Port]:
    """SaveImage with prefix 'preview' (with a note)."""
    c.notes.append(f"node {node.id} (PreviewImage): saved as a file with prefix 'preview'")
    return save_image(c, node, "preview")


@handler("ImageScale", widgets=("upscale_method", "width", "height", "crop"))
def image_scale(c: Converter, node: ComfyNode) -> list[Port]:
    """ImageScale to a width and height."""
    resample = upscale_mode(c, node, IMAGE_MODES)
    size = {k: c.number(node, k, 0, int) for k in ("width", "height")}
    nid = c.add("scale", node.id, "ImageScale", image=c.port(node, "image").link, **size, resample=resample)
    return [Port(Link(nid, "image"))]


@handler("Canny", widgets=("low_threshold", "high_threshold"))
def canny(c: Converter, node: ComfyNode) -> list[Port]:
    """Canny; ComfyUI's thresholds are fractions of full scale (0.01-0.99), OpenCV's 0-255 levels."""
    low, high = (
        round(c.number(node, f"{k}_threshold", d, float) * 255) for k, d in (("low", 0.4), ("high", 0.8))
    )
    nid = c.add("canny", node.id, "Canny", image=c.port(node, "image").link, low=low, high=high)
    return [Port(Link(nid, "image"))]


def one_to_one(type_name: str, source: str, output: str, **fields: str) -> None:
    """Register a node mapped one to one: input ``source`` feeds the same-named sdflow node."""

    def convert(c: Converter, node: ComfyNode) -> list[Port]:
        values = {k: str(c.const(node, k, v)) for k, v in fields.items()}
        nid = c.add(type_name.lower(), node.id, type_name, **{source: c.port(node, source).link}, **values)
        return [Port(Link(nid, output))]

    handler(type_name, widgets=tuple(fields))(convert)


one_to_one("ImageInvert", "image", "image")
one_to_one("ImageToMask", "image", "mask", channel="red")
one_to_one("MaskToImage", "mask", "image")
