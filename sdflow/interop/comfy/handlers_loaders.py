"""Handlers for ComfyUI's loaders: checkpoints, LoRAs, VAEs, and the CLIP skip setting."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler


@handler("CheckpointLoaderSimple", widgets=("ckpt_name",))
def checkpoint(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadCheckpoint (the name resolves through the model folders when it runs)."""
    nid = c.add("checkpoint", node.id, "LoadCheckpoint", checkpoint=c.const(node, "ckpt_name"))
    return [Port(Link(nid, "model")), Port(Link(nid, "clip")), Port(Link(nid, "vae"))]


@handler("CLIPSetLastLayer", widgets=("stop_at_clip_layer",))
def clip_set_last_layer(c: Converter, node: ComfyNode) -> list[Port]:
    """No node: the clip skip rides on the CLIP to the CLIPEncodes that use it."""
    clip, stop = c.port(node, "clip"), c.number(node, "stop_at_clip_layer", -1, int)
    if stop > -1:
        c.refuse(node, f"stop_at_clip_layer must be -1 or lower, got {stop}")
        stop = -1
    return [Port(clip.link, clip_skip=-stop - 1)]


@handler("LoraLoader", widgets=("lora_name", "strength_model", "strength_clip"))
def lora(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadLoRA on the model and the clip (whose clip skip passes through)."""
    model, clip = c.port(node, "model"), c.port(node, "clip")
    nid = c.add(
        "lora",
        node.id,
        "LoadLoRA",
        model=model.link,
        clip=clip.link,
        file=str(c.const(node, "lora_name")),
        strength_model=c.number(node, "strength_model", 1.0, float),
        strength_clip=c.number(node, "strength_clip", 1.0, float),
    )
    return [Port(Link(nid, "model")), Port(Link(nid, "clip"), clip_skip=clip.clip_skip)]


@handler("VAELoader", widgets=("vae_name",))
def vae_loader(c: Converter, node: ComfyNode) -> list[Port]:
    """LoadVAE."""
    return [Port(Link(c.add("vae", node.id, "LoadVAE", file=str(c.const(node, "vae_name"))), "vae"))]


@handler("HypernetworkLoader", widgets=("hypernetwork_name", "strength"))
def hypernetwork(c: Converter, node: ComfyNode) -> list[Port]:
    """HypernetworkLoader, ``hypernetwork_name`` -> ``file`` (a .pt needs --allow-pickle to run)."""
    nid = c.add(
        "hypernetwork",
        node.id,
        "HypernetworkLoader",
        model=c.port(node, "model").link,
        file=str(c.const(node, "hypernetwork_name")),
        strength=c.number(node, "strength", 1.0, float),
    )
    return [Port(Link(nid, "model"))]
