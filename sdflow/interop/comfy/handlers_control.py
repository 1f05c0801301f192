"""Handlers for ComfyUI's ControlNet nodes: the loaders and both apply nodes (T2I-Adapters included,
as ComfyUI loads them through the same nodes). Canny is with the image nodes."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler


@handler("ControlNetLoader", widgets=("control_net_name",))
def controlnet_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadControlNet of the file name (looked up in the model folders' controlnet folders)."""
    nid = c.add("controlnet", node.id, "LoadControlNet", file=str(c.const(node, "control_net_name")))
    return [Port(Link(nid, "control_net"))]


@handler("DiffControlNetLoader", widgets=("control_net_name",))
def diff_controlnet_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadControlNet too: the model input only matters to "difference" ControlNets, which sdflow
    loads as ordinary ones (a note says so)."""
    c.port(node, "model")  # connected, as ComfyUI requires
    c.notes.append(
        f"node {node.id} (DiffControlNetLoader): loaded as a plain ControlNet; weights stored as "
        "differences to the model are not added to it"
    )
    return controlnet_loader(c, node)


@handler("ControlNetApply", widgets=("strength",))
def controlnet_apply(c: Converter, node: ComfyNode) -> list[Port]:
    """ApplyControlNet on the positive side only (ComfyUI's old node steers just the conditioning
    it is given): its ``positive`` output, fed the same conditioning on both inputs."""
    conditioning = c.port(node, "conditioning").link
    nid = c.add(
        "apply_controlnet",
        node.id,
        "ApplyControlNet",
        positive=conditioning,
        negative=conditioning,
        control_net=c.port(node, "control_net").link,
        image=c.port(node, "image").link,
        strength=c.number(node, "strength", 1.0, float),
    )
    return [Port(Link(nid, "positive"))]


@handler("ControlNetApplyAdvanced", widgets=("strength", "start_percent", "end_percent"))
def controlnet_apply_advanced(c: Converter, node: ComfyNode) -> list[Port]:
    """ApplyControlNet with both conditionings, strength and the start..end window (its optional
    vae input is for ControlNets that read latents, which sdflow does not load: ignored)."""
    nid = c.add(
        "apply_controlnet",
        node.id,
        "ApplyControlNet",
        positive=c.port(node, "positive").link,
        negative=c.port(node, "negative").link,
        control_net=c.port(node, "control_net").link,
        image=c.port(node, "image").link,
        strength=c.number(node, "strength", 1.0, float),
        start_percent=c.number(node, "start_percent", 0.0, float),
        end_percent=c.number(node, "end_percent", 1.0, float),
    )
    return [Port(Link(nid, "positive")), Port(Link(nid, "negative"))]
