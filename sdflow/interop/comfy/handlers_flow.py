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
