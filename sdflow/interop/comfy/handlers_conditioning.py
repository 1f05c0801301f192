"""Handlers for ComfyUI's prompt and conditioning nodes."""

from __future__ import annotations

from typing import Any

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler


@handler("CLIPTextEncode", widgets=("text",))
def clip_text_encode(c: Converter, node: ComfyNode) -> list[Port]:
    """CLIPEncode, with the clip skip its clip carries."""
    clip = c.port(node, "clip")
    fields: dict[str, Any] = {"clip": clip.link, "text": str(c.const(node, "text", ""))}
    if clip.clip_skip:
        fields["clip_skip"] = clip.clip_skip
    return [Port(Link(c.add("prompt", node.id, "CLIPEncode", **fields), "conditioning"))]


@handler("ConditioningConcat", widgets=())
def conditioning_concat(c: Converter, node: ComfyNode) -> list[Port]:
    """ConditioningConcat: conditioning_to -> first, conditioning_from -> second."""
    first, second = c.port(node, "conditioning_to").link, c.port(node, "conditioning_from").link
    nid = c.add("concat", node.id, "ConditioningConcat", first=first, second=second)
    return [Port(Link(nid, "conditioning"))]


@handler("ConditioningAverage", widgets=("conditioning_to_strength",))
def conditioning_average(c: Converter, node: ComfyNode) -> list[Port]:
    """ConditioningAverage, conditioning_to_strength -> weight."""
    first, second = c.port(node, "conditioning_to").link, c.port(node, "conditioning_from").link
    weight = c.number(node, "conditioning_to_strength", 1.0, float)
    nid = c.add("average", node.id, "ConditioningAverage", first=first, second=second, weight=weight)
    return [Port(Link(nid, "conditioning"))]


@handler("InstructPixToPixConditioning", widgets=())
def instruct_pix_to_pix(c: Converter, node: ComfyNode) -> list[Port]:
    """InstructPixToPixConditioning: the same inputs and outputs (positive, negative, latent)."""
    fields = {name: c.port(node, name).link for name in ("positive", "negative", "vae", "pixels")}
    nid = c.add("ip2p", node.id, "InstructPixToPixConditioning", **fields)
    return [Port(Link(nid, output)) for output in ("positive", "negative", "latent")]
