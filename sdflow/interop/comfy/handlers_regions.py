"""Handlers for ComfyUI's composition and prompt-scheduling conditioning nodes, onto the sdflow nodes
of the same names and fields (``nodes/library/conditioning_area.py``)."""

from __future__ import annotations

from sdflow.formats.comfy_json import ComfyNode
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.handlers_utilities import same_named
from sdflow.interop.comfy.registry import handler

OUT = ("conditioning",)


@handler("ConditioningCombine", widgets=())
def combine(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("conditioning_1", "conditioning_2"), {}, OUT)


@handler("ConditioningSetArea", widgets=("width", "height", "x", "y", "strength"))
def set_area(c: Converter, node: ComfyNode) -> list[Port]:
    sizes = {"width": (64, int), "height": (64, int), "x": (0, int), "y": (0, int)}
    return same_named(c, node, ("conditioning",), {**sizes, "strength": (1.0, float)}, OUT)


@handler("ConditioningSetAreaPercentage", widgets=("width", "height", "x", "y", "strength"))
def set_area_percentage(c: Converter, node: ComfyNode) -> list[Port]:
    sizes = {"width": (1.0, float), "height": (1.0, float), "x": (0.0, float), "y": (0.0, float)}
    return same_named(c, node, ("conditioning",), {**sizes, "strength": (1.0, float)}, OUT)


@handler("ConditioningSetAreaStrength", widgets=("strength",))
def set_area_strength(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("conditioning",), {"strength": (1.0, float)}, OUT)


@handler("ConditioningSetMask", widgets=("strength", "set_cond_area"))
def set_mask(c: Converter, node: ComfyNode) -> list[Port]:
    area = str(c.const(node, "set_cond_area", "default"))
    return same_named(c, node, ("conditioning", "mask"), {"strength": (1.0, float)}, OUT, set_cond_area=area)


@handler("ConditioningSetTimestepRange", widgets=("start", "end"))
def set_timestep_range(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("conditioning",), {"start": (0.0, float), "end": (1.0, float)}, OUT)
