"""Handlers for ComfyUI's GLIGEN nodes: GLIGENLoader and GLIGENTextBoxApply, onto LoadGLIGEN and
GLIGENTextBoxApply (whose defaults are ComfyUI's: boxes on every step, the negative without them)."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler

CELL = 8  # ComfyUI divides the box by 8 (latent cells): sdflow's fields are multiples of 8
BOX = {"width": 64, "height": 64, "x": 0, "y": 0}  # ComfyUI's defaults
SMALLEST = {"width": CELL, "height": CELL, "x": 0, "y": 0}


@handler("GLIGENLoader", widgets=("gligen_name",))
def gligen_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadGLIGEN of the file name (looked up in the model folders' gligen folders)."""
    name = str(c.const(node, "gligen_name"))
    nid = c.add("gligen", node.id, "LoadGLIGEN", file=name)
    return [Port(Link(nid, "gligen"))]


@handler("GLIGENTextBoxApply", widgets=("text", "width", "height", "x", "y"))
def gligen_text_box_apply(c: Converter, node: ComfyNode) -> list[Port]:
    """GLIGENTextBoxApply with the box in pixels, rounded down to whole latent cells as ComfyUI does."""
    box = {}
    for name, default in BOX.items():
        value = c.number(node, name, default, int)
        box[name] = max(SMALLEST[name], value // CELL * CELL)
        if box[name] != value:
            c.notes.append(f"node {node.id} (GLIGENTextBoxApply): {name} {value} drawn as {box[name]}")
    nid = c.add(
        "gligen_box",
        node.id,
        "GLIGENTextBoxApply",
        conditioning=c.port(node, "conditioning_to").link,
        clip=c.port(node, "clip").link,
        gligen=c.port(node, "gligen_textbox_model").link,
        text=str(c.const(node, "text", "")),
        **box,
    )
    return [Port(Link(nid, "conditioning"))]
