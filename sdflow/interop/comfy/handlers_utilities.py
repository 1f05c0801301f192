"""Handlers for ComfyUI's merging, latent/image utility and model-patch nodes, each onto the sdflow
node of the same name and fields (the block-merge nodes' ``input_blocks.3`` is ``input_blocks_3``)."""

from __future__ import annotations

from typing import Any

from sdflow.formats.comfy_json import ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy.context import Converter, Port
from sdflow.interop.comfy.registry import handler
from sdflow.nodes import registry

Numbers = dict[str, tuple[Any, type]]  # sdflow field -> (default, int | float | bool)


def same_named(
    c: Converter,
    node: ComfyNode,
    links: tuple[str, ...],
    numbers: Numbers,
    outputs: tuple[str, ...],
    **more: Any,
) -> list[Port]:
    """An sdflow node of the ComfyUI node's type with its links and constants under the same names."""
    fields: dict[str, Any] = {name: c.port(node, name).link for name in links}
    for name, (default, kind) in numbers.items():
        fields[name] = c.number(node, name, default, kind)
    nid = c.add(node.type.lower(), node.id, node.type, **fields, **more)
    return [Port(Link(nid, output)) for output in outputs]


@handler("ModelMergeSimple", widgets=("ratio",))
def merge_simple(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model1", "model2"), {"ratio": (1.0, float)}, ("model",))


@handler("ModelMergeBlocks", widgets=("input", "middle", "out"))
def merge_blocks(c: Converter, node: ComfyNode) -> list[Port]:
    ratios = {name: (1.0, float) for name in ("input", "middle", "out")}
    return same_named(c, node, ("model1", "model2"), ratios, ("model",))


@handler("ModelMergeAdd", widgets=())
def merge_add(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model1", "model2"), {}, ("model",))


@handler("ModelMergeSubtract", widgets=("multiplier",))
def merge_subtract(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model1", "model2"), {"multiplier": (1.0, float)}, ("model",))


def _blocks(type_name: str) -> dict[str, str]:
    """sdflow field -> ComfyUI input name of a per-block merge node's ratios, in ComfyUI's order."""
    return dict(getattr(registry.get(type_name), "blocks", {}))


@handler("ModelMergeSD1", widgets=tuple(_blocks("ModelMergeSD1").values()))
@handler("ModelMergeSDXL", widgets=tuple(_blocks("ModelMergeSDXL").values()))
def merge_per_block(c: Converter, node: ComfyNode) -> list[Port]:
    """Each ``input_blocks.N`` / ``time_embed.`` ratio onto its field (``input_blocks_N``, ``time_embed``)."""
    blocks = _blocks(node.type)
    ratios = {field: c.number(node, prefix, 1.0, float) for field, prefix in blocks.items()}
    links = {name: c.port(node, name).link for name in ("model1", "model2")}
    nid = c.add("merge", node.id, node.type, **links, **ratios)
    return [Port(Link(nid, "model"))]


@handler("CLIPMergeSimple", widgets=("ratio",))
def clip_merge_simple(c: Converter, node: ComfyNode) -> list[Port]:
    return _clip(c, node, {"ratio": (1.0, float)})


@handler("CLIPMergeAdd", widgets=())
def clip_merge_add(c: Converter, node: ComfyNode) -> list[Port]:
    return _clip(c, node, {})


@handler("CLIPMergeSubtract", widgets=("multiplier",))
def clip_merge_subtract(c: Converter, node: ComfyNode) -> list[Port]:
    return _clip(c, node, {"multiplier": (1.0, float)})


def _clip(c: Converter, node: ComfyNode, numbers: Numbers) -> list[Port]:
    """A CLIP merge; clip1's clip skip rides on through the merged CLIP."""
    skip = c.port(node, "clip1").clip_skip
    [port] = same_named(c, node, ("clip1", "clip2"), numbers, ("clip",))
    return [Port(port.link, clip_skip=skip)]


@handler("CheckpointSave", widgets=("filename_prefix",))
def checkpoint_save(c: Converter, node: ComfyNode) -> list[Port]:
    prefix = str(c.const(node, "filename_prefix", "checkpoints/ComfyUI"))
    return same_named(c, node, ("model", "clip", "vae"), {}, ("files",), filename_prefix=prefix)


@handler("LatentUpscaleBy", widgets=("upscale_method", "scale_by"))
def latent_upscale_by(c: Converter, node: ComfyNode) -> list[Port]:
    method = str(c.const(node, "upscale_method", "nearest-exact"))
    nid = c.add(
        "upscale",
        node.id,
        "LatentUpscaleBy",
        latent=c.port(node, "samples").link,
        upscale_method=method,
        scale_by=c.number(node, "scale_by", 1.5, float),
    )
    return [Port(Link(nid, "latent"))]


@handler("LatentComposite", widgets=("x", "y", "feather"))
def latent_composite(c: Converter, node: ComfyNode) -> list[Port]:
    offsets = {name: (0, int) for name in ("x", "y", "feather")}
    return same_named(c, node, ("samples_to", "samples_from"), offsets, ("latent",))


@handler("LatentCompositeMasked", widgets=("x", "y", "resize_source"))
def latent_composite_masked(c: Converter, node: ComfyNode) -> list[Port]:
    links = ("destination", "source", "mask") if "mask" in node.inputs else ("destination", "source")
    numbers: Numbers = {"x": (0, int), "y": (0, int)}
    resize = bool(c.const(node, "resize_source", False))
    return same_named(c, node, links, numbers, ("latent",), resize_source=resize)


@handler("RepeatLatentBatch", widgets=("amount",))
def repeat_latent_batch(c: Converter, node: ComfyNode) -> list[Port]:
    nid = c.add(
        "repeat",
        node.id,
        "RepeatLatentBatch",
        latent=c.port(node, "samples").link,
        amount=c.number(node, "amount", 1, int),
    )
    return [Port(Link(nid, "latent"))]


@handler("ImagePadForOutpaint", widgets=("left", "top", "right", "bottom", "feathering"))
def image_pad_for_outpaint(c: Converter, node: ComfyNode) -> list[Port]:
    sides: Numbers = {name: (0, int) for name in ("left", "top", "right", "bottom")}
    return same_named(c, node, ("image",), {**sides, "feathering": (40, int)}, ("image", "mask"))


@handler("ConditioningZeroOut", widgets=())
def conditioning_zero_out(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("conditioning",), {}, ("conditioning",))


@handler("TomePatchModel", widgets=("ratio",))
def tome_patch_model(c: Converter, node: ComfyNode) -> list[Port]:
    return same_named(c, node, ("model",), {"ratio": (0.3, float)}, ("model",))


@handler("ModelSamplingDiscrete", widgets=("sampling", "zsnr"))
def model_sampling_discrete(c: Converter, node: ComfyNode) -> list[Port]:
    sampling = str(c.const(node, "sampling", "eps"))
    if sampling not in ("eps", "v_prediction", "lcm", "x0"):
        c.refuse(node, f"sampling '{sampling}' is not supported (sdflow maps eps, v_prediction, lcm, x0)")
        sampling = "eps"
    if sampling == "lcm":
        c.notes.append(
            f"node {node.id} (ModelSamplingDiscrete): lcm is eps here; use the lcm sampler for LCM"
        )
    zsnr = bool(c.const(node, "zsnr", False))
    return same_named(c, node, ("model",), {}, ("model",), sampling=sampling, zsnr=zsnr)
