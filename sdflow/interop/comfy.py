"""ComfyUI workflows to sdflow workflows.

Each supported ComfyUI node becomes one or more sdflow nodes (a KSampler is a Scheduler, an AddNoise
and a DenoiseLoop). Values that are no node of their own in sdflow travel with the link: the clip
skip a CLIPSetLastLayer sets reaches the CLIPEncode nodes that use that clip, and a
SetLatentNoiseMask on a VAEEncode's latent becomes that VAEEncode's mask. Anything that cannot be
converted faithfully is gathered and reported together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from sdflow.errors import Location, UserError
from sdflow.formats.comfy_json import ComfyGraph, ComfyNode, Ref
from sdflow.graphs.model import InputRef, InputSpec, Link, NodeSpec, Workflow
from sdflow.nodes.fields import MAX_SEED
from sdflow.nodes.ops.samplers import supports_karras

# ComfyUI sampler -> sdflow sampler; the `karras` scheduler is the Scheduler's `sigmas: karras`.
SAMPLERS = {
    "euler": "euler",
    "euler_ancestral": "euler_ancestral",
    "heun": "heun",
    "dpmpp_2m": "dpmpp_2m",
    "ddim": "ddim",
    "uni_pc": "unipc",
    "lms": "lms",
    "uni_pc_bh2": "uni_pc_bh2",
    "dpmpp_2m_sde": "dpmpp_2m_sde",
    "dpmpp_3m_sde": "dpmpp_3m_sde",
    "dpmpp_sde": "dpmpp_sde",
    "dpm_2": "dpm_2",
    "dpm_2_ancestral": "dpm_2_ancestral",
    "deis": "deis",
    "lcm": "lcm",
}
SCHEDULERS = ("normal", "karras")
LATENT_MODES = {"nearest-exact": "nearest", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}
IMAGE_MODES = {**LATENT_MODES, "area": "box", "lanczos": "lanczos"}


class ConversionError(UserError):
    """The workflow uses nodes or settings sdflow cannot reproduce; the message lists them all."""


@dataclass
class Port:
    """What a ComfyUI output slot is in sdflow: a link, plus settings riding along with it."""

    link: Link
    clip_skip: int = 0  # on a CLIP: layers to skip (CLIPSetLastLayer)
    encoder: str | None = None  # on a latent: the sdflow VAEEncode node that made it
    stopped: bool = False  # on a latent: a KSamplerAdvanced returned it with leftover noise


@dataclass
class Conversion:
    """The converted workflow and notes on what was approximated or left out."""

    workflow: Workflow
    notes: list[str] = field(default_factory=list)


def convert(graph: ComfyGraph, source: str, image_dir: str | None = None) -> Conversion:
    """The sdflow workflow for a ComfyUI graph; ``image_dir`` prefixes LoadImage file names."""
    return _Converter(graph, source, image_dir).run()


class _Problem(Exception):
    """One reason a node cannot be converted (collected, then reported with the others)."""


class _Converter:
    def __init__(self, graph: ComfyGraph, source: str, image_dir: str | None) -> None:
        self.graph, self.source, self.image_dir = graph, source, image_dir
        self.workflow = Workflow(file=None)
        self.notes = list(graph.notes)
        self.ports: dict[str, list[Port]] = {}
        self.replaced: list[str] = []  # sdflow nodes a later one supersedes (SetLatentNoiseMask)

    def run(self) -> Conversion:
        unsupported: dict[str, list[str]] = {}
        for node in self.graph.nodes.values():
            if node.type not in HANDLERS:
                unsupported.setdefault(node.type, []).append(node.id)
        problems = []
        if unsupported:
            listed = "; ".join(f"{kind} (node {', '.join(ids)})" for kind, ids in sorted(unsupported.items()))
            problems.append(
                f"unsupported ComfyUI nodes: {listed}. sdflow imports: {', '.join(sorted(HANDLERS))}"
            )
            if self.graph.format == "ui" and any(
                k.startswith(("subgraph ", "workflow>")) for k in unsupported
            ):
                problems.append(
                    "subgraphs and group nodes: export the API format, where ComfyUI flattens them"
                )
        else:
            for node in self._order():
                try:
                    self.ports[node.id] = HANDLERS[node.type](self, node)
                except _Problem as exc:
                    problems.append(f"node {node.id} ({node.type}): {exc}")
                    self.ports[node.id] = []
                except (ValueError, TypeError) as exc:  # e.g. int("abc") on a hand-edited file
                    problems.append(f"node {node.id} ({node.type}): invalid value: {exc}")
                    self.ports[node.id] = []
        if problems:
            raise ConversionError(
                "cannot import this workflow:\n" + "\n".join(problems), Location(self.source)
            )
        used = {link.node for spec in self.workflow.nodes.values() for link in spec.links().values()}
        for node_id in self.replaced:
            if node_id not in used:
                del self.workflow.nodes[node_id]
        promote_inputs(self.workflow)
        return Conversion(self.workflow, self.notes)

    def _order(self) -> list[ComfyNode]:
        dag = nx.DiGraph()
        for node in self.graph.nodes.values():
            dag.add_node(node.id)
            for value in node.inputs.values():
                if isinstance(value, Ref):
                    dag.add_edge(value.node, node.id)
        missing = [n for n in dag if n not in self.graph.nodes]
        if missing:
            raise ConversionError(
                f"links come from nodes the workflow lacks: {', '.join(missing)}", Location(self.source)
            )
        if not nx.is_directed_acyclic_graph(dag):
            raise ConversionError("the workflow's links form a loop", Location(self.source))
        return [self.graph.nodes[n] for n in nx.lexicographical_topological_sort(dag, key=_natural)]

    # -- reading a ComfyUI node's inputs ------------------------------------------------------

    def const(self, node: ComfyNode, name: str, default: Any = None) -> Any:
        value = node.inputs.get(name, default)
        if isinstance(value, Ref):
            raise _Problem(f"input '{name}' comes from node {value.node}; sdflow needs a constant here")
        if value is None:
            raise _Problem(f"input '{name}' has no value")
        return value

    def port(self, node: ComfyNode, name: str) -> Port:
        value = node.inputs.get(name)
        if not isinstance(value, Ref):
            raise _Problem(f"input '{name}' is not connected")
        slots = self.ports.get(value.node, [])
        if not 0 <= value.slot < len(slots):
            raise _Problem(f"input '{name}' uses output {value.slot} of node {value.node}, which has none")
        return slots[value.slot]

    # -- writing sdflow nodes -----------------------------------------------------------------

    def add(self, base: str, comfy_id: str, type_name: str, **fields: Any) -> str:
        node_id = f"{base}_{re.sub(r'[^A-Za-z0-9_]', '_', comfy_id)}"
        while node_id in self.workflow.nodes:
            node_id += "_"
        self.workflow.nodes[node_id] = NodeSpec(node_id, type_name, fields)
        return node_id

    def image_path(self, name: str) -> str:
        if self.image_dir is None:
            return name
        return os.path.join(self.image_dir, name)


# -- one handler per ComfyUI node type: returns its output slots as Ports ----------------------


def _checkpoint(c: _Converter, node: ComfyNode) -> list[Port]:
    nid = c.add("checkpoint", node.id, "LoadCheckpoint", checkpoint=c.const(node, "ckpt_name"))
    return [Port(Link(nid, "model")), Port(Link(nid, "clip")), Port(Link(nid, "vae"))]


def _clip_set_last_layer(c: _Converter, node: ComfyNode) -> list[Port]:
    clip, stop = c.port(node, "clip"), int(c.const(node, "stop_at_clip_layer", -1))
    if stop > -1:
        raise _Problem(f"stop_at_clip_layer must be -1 or lower, got {stop}")
    return [Port(clip.link, clip_skip=-stop - 1)]


def _clip_text_encode(c: _Converter, node: ComfyNode) -> list[Port]:
    clip = c.port(node, "clip")
    fields: dict[str, Any] = {"clip": clip.link, "text": str(c.const(node, "text", ""))}
    if clip.clip_skip:
        fields["clip_skip"] = clip.clip_skip
    return [Port(Link(c.add("prompt", node.id, "CLIPEncode", **fields), "conditioning"))]


def _empty_latent(c: _Converter, node: ComfyNode) -> list[Port]:
    size = {k: int(c.const(node, k, d)) for k, d in (("width", 512), ("height", 512), ("batch_size", 1))}
    return [Port(Link(c.add("empty", node.id, "EmptyLatent", **size), "latent"))]


def sampler_fields(sampler: str, scheduler: str) -> dict[str, str]:
    """The Scheduler's sampler (and sigmas) for a ComfyUI (sampler_name, scheduler) pair, or _Problem
    naming the choices."""
    if sampler not in SAMPLERS:
        raise _Problem(f"unknown sampler_name '{sampler}' (sdflow maps: {', '.join(SAMPLERS)})")
    if scheduler not in SCHEDULERS:
        raise _Problem(f"unknown scheduler '{scheduler}' (sdflow maps: {', '.join(SCHEDULERS)})")
    if scheduler == "karras":
        if not supports_karras(SAMPLERS[sampler]):
            karras = ", ".join(name for name, ours in SAMPLERS.items() if supports_karras(ours))
            raise _Problem(
                f"scheduler 'karras' is supported with {karras} only, not '{sampler}' "
                "(diffusers has no Karras sigmas for it)"
            )
        return {"sampler": SAMPLERS[sampler], "sigmas": "karras"}
    return {"sampler": SAMPLERS[sampler]}


def partial_schedule(steps: int, denoise: float) -> tuple[int, float]:
    """(schedule steps, strength) running ``steps`` steps at ``denoise``, as ComfyUI does: it makes
    int(steps / denoise) steps and runs the last ``steps`` of them."""
    if denoise >= 1.0:
        return steps, 1.0
    total = int(steps / denoise)
    strength = round(steps / total, 6)
    while int(total * strength) < steps:  # sdflow runs int(total * strength) steps
        strength = round(strength + 1e-6, 6)
    return total, strength


def _sampling(
    c: _Converter,
    node: ComfyNode,
    seed: int,
    strength_steps: tuple[int, float],
    resume_at: int | None = None,
    end_step: int | None = None,
) -> list[Port]:
    """Scheduler, AddNoise and DenoiseLoop; ``resume_at`` continues a stopped latent at that step
    without noise, ``end_step`` stops after that step with the leftover noise."""
    model = c.port(node, "model")
    sampler = sampler_fields(str(c.const(node, "sampler_name")), str(c.const(node, "scheduler")))
    total, strength = strength_steps
    schedule = c.add("schedule", node.id, "Scheduler", model=model.link, **sampler, steps=total)
    noise_fields: dict[str, Any] = {"latent": c.port(node, "latent_image").link, "schedule": Link(schedule)}
    if not 0 <= seed <= MAX_SEED:
        raise _Problem(f"seed {seed} is outside sdflow's range 0..{MAX_SEED}")
    noise_fields["seed"] = seed
    if strength < 1.0:
        noise_fields["strength"] = strength
    if resume_at is not None:
        noise_fields["start_at"] = resume_at
    noised = c.add("noise", node.id, "AddNoise", **noise_fields)
    loop_fields: dict[str, Any] = {"end_at": end_step} if end_step is not None else {}
    denoised = c.add(
        "sample",
        node.id,
        "DenoiseLoop",
        model=model.link,
        positive=c.port(node, "positive").link,
        negative=c.port(node, "negative").link,
        latent=Link(noised),
        cfg=float(c.const(node, "cfg", 8.0)),
        **loop_fields,
    )
    return [Port(Link(denoised, "latent"), stopped=end_step is not None)]


def _ksampler(c: _Converter, node: ComfyNode) -> list[Port]:
    steps, denoise = int(c.const(node, "steps", 20)), float(c.const(node, "denoise", 1.0))
    if not 0.0 < denoise <= 1.0:
        raise _Problem(f"denoise must be in (0, 1], got {denoise}")
    return _sampling(c, node, int(c.const(node, "seed")), partial_schedule(steps, denoise))


def _ksampler_advanced(c: _Converter, node: ComfyNode) -> list[Port]:
    """A whole run, or one pass of a split: stopping after end_at_step with the leftover noise
    (DenoiseLoop end_at), continuing such a latent at start_at_step (AddNoise start_at)."""
    steps = int(c.const(node, "steps", 20))
    start, end = int(c.const(node, "start_at_step", 0)), int(c.const(node, "end_at_step", 10000))
    add_noise = c.const(node, "add_noise", "enable") == "enable"
    stops = end < steps
    if not 0 <= start < steps:
        raise _Problem(f"start_at_step {start} must be below steps {steps}")
    if end <= start:
        raise _Problem(f"end_at_step {end} must be above start_at_step {start}")
    if stops and c.const(node, "return_with_leftover_noise", "disable") != "enable":
        raise _Problem(
            f"end_at_step {end} < steps {steps} with return_with_leftover_noise 'disable' (ComfyUI then "
            "jumps to a clean latent on the last step) is not supported: enable return_with_leftover_noise"
        )
    stopped_latent = c.port(node, "latent_image").stopped
    if not add_noise and not stopped_latent:
        raise _Problem(
            "add_noise 'disable' is supported only on the latent of a KSamplerAdvanced that returns "
            "with leftover noise (a split run's second pass)"
        )
    if add_noise and stopped_latent:
        raise _Problem(
            "add_noise 'enable' on a latent returned with leftover noise (noise added twice) is not "
            "supported: disable add_noise to continue it"
        )
    seed, end_step = int(c.const(node, "noise_seed")), end if stops else None
    if not add_noise:
        return _sampling(c, node, seed, (steps, 1.0), resume_at=start, end_step=end_step)
    strength = 1.0 if start == 0 else round((steps - start) / steps, 6)
    return _sampling(c, node, seed, (steps, strength), end_step=end_step)


def _vae_encode(c: _Converter, node: ComfyNode, mask: Link | None = None) -> list[Port]:
    fields: dict[str, Any] = {"vae": c.port(node, "vae").link, "image": c.port(node, "pixels").link}
    if mask is not None:
        fields["mask"] = mask
    fields["posterior"] = "mode"  # ComfyUI encodes to the posterior's mean: no randomness
    nid = c.add("encode", node.id, "VAEEncode", **fields)
    return [Port(Link(nid, "latent"), encoder=nid)]


def _vae_encode_for_inpaint(c: _Converter, node: ComfyNode) -> list[Port]:
    grow = int(c.const(node, "grow_mask_by", 6))
    if grow:
        c.notes.append(f"node {node.id} (VAEEncodeForInpaint): grow_mask_by {grow} ignored (mask used as is)")
    return _vae_encode(c, node, c.port(node, "mask").link)


def _set_latent_noise_mask(c: _Converter, node: ComfyNode) -> list[Port]:
    latent, mask = c.port(node, "samples"), c.port(node, "mask")
    spec = c.workflow.nodes.get(latent.encoder or "")
    if spec is None or "mask" in spec.fields:
        raise _Problem("supported only on the latent of a VAEEncode without a mask")
    fields = {**spec.fields, "mask": mask.link}
    c.replaced.append(latent.encoder or "")
    nid = c.add("masked", node.id, "VAEEncode", **fields)
    return [Port(Link(nid, "latent"), encoder=nid)]


def _vae_decode(c: _Converter, node: ComfyNode) -> list[Port]:
    nid = c.add(
        "decode", node.id, "VAEDecode", vae=c.port(node, "vae").link, latent=c.port(node, "samples").link
    )
    return [Port(Link(nid, "image"))]


def _load_image(c: _Converter, node: ComfyNode) -> list[Port]:
    name = re.sub(r" \[(input|output|temp)\]$", "", str(c.const(node, "image")))
    nid = c.add("image", node.id, "LoadImage", path=c.image_path(name))
    return [Port(Link(nid, "image")), Port(Link(nid, "mask"))]


def _save_image(c: _Converter, node: ComfyNode, prefix: str | None = None) -> list[Port]:
    prefix = prefix or str(c.const(node, "filename_prefix", "ComfyUI"))
    if "%" in prefix:
        c.notes.append(
            f"node {node.id} (SaveImage): '%...%' in filename_prefix '{prefix}' is written as it is"
        )
    c.add("save", node.id, "SaveImage", image=c.port(node, "images").link, filename_prefix=prefix)
    return []


def _preview_image(c: _Converter, node: ComfyNode) -> list[Port]:
    c.notes.append(f"node {node.id} (PreviewImage): saved as a file with prefix 'preview'")
    return _save_image(c, node, "preview")


def _mode(node: ComfyNode, c: _Converter, modes: dict[str, str]) -> str:
    method = str(c.const(node, "upscale_method", "nearest-exact"))
    if method not in modes:
        raise _Problem(f"upscale_method '{method}' is not supported (sdflow maps: {', '.join(modes)})")
    if str(node.inputs.get("crop", "disabled")) != "disabled":
        raise _Problem("crop 'center' is not supported (sdflow resizes without cropping)")
    return modes[method]


def _latent_upscale(c: _Converter, node: ComfyNode) -> list[Port]:
    mode = _mode(node, c, LATENT_MODES)
    size = {k: int(c.const(node, k, 0)) for k in ("width", "height")}
    nid = c.add("upscale", node.id, "LatentUpscale", latent=c.port(node, "samples").link, **size, mode=mode)
    return [Port(Link(nid, "latent"))]


def _latent_upscale_by(c: _Converter, node: ComfyNode) -> list[Port]:
    mode = _mode(node, c, LATENT_MODES)
    factor = float(c.const(node, "scale_by", 1.5))
    nid = c.add(
        "upscale", node.id, "LatentUpscale", latent=c.port(node, "samples").link, factor=factor, mode=mode
    )
    return [Port(Link(nid, "latent"))]


def _image_scale(c: _Converter, node: ComfyNode) -> list[Port]:
    resample = _mode(node, c, IMAGE_MODES)
    size = {k: int(c.const(node, k, 0)) for k in ("width", "height")}
    nid = c.add("scale", node.id, "ImageScale", image=c.port(node, "image").link, **size, resample=resample)
    return [Port(Link(nid, "image"))]


def _lora(c: _Converter, node: ComfyNode) -> list[Port]:
    model, clip = c.port(node, "model"), c.port(node, "clip")
    nid = c.add(
        "lora",
        node.id,
        "LoadLoRA",
        model=model.link,
        clip=clip.link,
        file=str(c.const(node, "lora_name")),
        strength_model=float(c.const(node, "strength_model", 1.0)),
        strength_clip=float(c.const(node, "strength_clip", 1.0)),
    )
    return [Port(Link(nid, "model")), Port(Link(nid, "clip"), clip_skip=clip.clip_skip)]


def _vae_loader(c: _Converter, node: ComfyNode) -> list[Port]:
    return [Port(Link(c.add("vae", node.id, "LoadVAE", file=str(c.const(node, "vae_name"))), "vae"))]


def _conditioning_concat(c: _Converter, node: ComfyNode) -> list[Port]:
    first, second = c.port(node, "conditioning_to").link, c.port(node, "conditioning_from").link
    nid = c.add("concat", node.id, "ConditioningConcat", first=first, second=second)
    return [Port(Link(nid, "conditioning"))]


def _conditioning_average(c: _Converter, node: ComfyNode) -> list[Port]:
    first, second = c.port(node, "conditioning_to").link, c.port(node, "conditioning_from").link
    weight = float(c.const(node, "conditioning_to_strength", 1.0))
    nid = c.add("average", node.id, "ConditioningAverage", first=first, second=second, weight=weight)
    return [Port(Link(nid, "conditioning"))]


def _canny(c: _Converter, node: ComfyNode) -> list[Port]:
    # ComfyUI thresholds are fractions of full scale (0.01-0.99); OpenCV's are 0-255 grey levels.
    low, high = (
        round(float(c.const(node, f"{k}_threshold", d)) * 255) for k, d in (("low", 0.4), ("high", 0.8))
    )
    nid = c.add("canny", node.id, "Canny", image=c.port(node, "image").link, low=low, high=high)
    return [Port(Link(nid, "image"))]


def _simple(
    type_name: str, source: str, output: str, **fields: str
) -> Callable[[_Converter, ComfyNode], list[Port]]:
    """A handler for a node mapped one to one: input ``source`` feeds the same-named sdflow node."""

    def handler(c: _Converter, node: ComfyNode) -> list[Port]:
        values = {k: str(c.const(node, k, v)) for k, v in fields.items()}
        nid = c.add(type_name.lower(), node.id, type_name, **{source: c.port(node, source).link}, **values)
        return [Port(Link(nid, output))]

    return handler


HANDLERS: dict[str, Callable[[_Converter, ComfyNode], list[Port]]] = {
    "CheckpointLoaderSimple": _checkpoint,
    "CLIPSetLastLayer": _clip_set_last_layer,
    "CLIPTextEncode": _clip_text_encode,
    "EmptyLatentImage": _empty_latent,
    "KSampler": _ksampler,
    "KSamplerAdvanced": _ksampler_advanced,
    "VAEEncode": _vae_encode,
    "VAEEncodeForInpaint": _vae_encode_for_inpaint,
    "SetLatentNoiseMask": _set_latent_noise_mask,
    "VAEDecode": _vae_decode,
    "LoadImage": _load_image,
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "LatentUpscale": _latent_upscale,
    "LatentUpscaleBy": _latent_upscale_by,
    "ImageScale": _image_scale,
    "LoraLoader": _lora,
    "VAELoader": _vae_loader,
    "ConditioningConcat": _conditioning_concat,
    "ConditioningAverage": _conditioning_average,
    "Canny": _canny,
    "ImageInvert": _simple("ImageInvert", "image", "image"),
    "ImageToMask": _simple("ImageToMask", "image", "mask", channel="red"),
    "MaskToImage": _simple("MaskToImage", "mask", "image"),
}


def promote_inputs(workflow: Workflow) -> None:
    """Make the values people change most workflow inputs, for `--set`: each sampler's seed
    (``seed``, or ``seed_<node>`` with several samplers) and, with one sampler, its prompts."""
    noises = [spec for spec in workflow.nodes.values() if spec.type == "AddNoise"]
    for spec in noises:
        name = "seed" if len(noises) == 1 else f"seed_{spec.id.removeprefix('noise_')}"
        _promote(workflow, spec, "seed", name, "int")
    loops = [spec for spec in workflow.nodes.values() if spec.type == "DenoiseLoop"]
    if len(loops) == 1:
        positive, negative = (loops[0].fields[f].node for f in ("positive", "negative"))
        _promote(workflow, workflow.nodes[positive], "text", "prompt", "str")
        if negative != positive:
            _promote(workflow, workflow.nodes[negative], "text", "negative", "str")


def _promote(workflow: Workflow, spec: NodeSpec, field_name: str, name: str, kind: str) -> None:
    if field_name in spec.fields and not isinstance(spec.fields[field_name], InputRef):
        workflow.inputs[name] = InputSpec(name, kind, spec.fields[field_name])
        spec.fields[field_name] = InputRef(name)


def _natural(node_id: str) -> str:
    """Sort key putting ComfyUI's numeric ids in numeric order ("9" before "10")."""
    return re.sub(r"\d+", lambda m: m.group().zfill(12), node_id)


def relative_image_dir(image_dir: str | None, output: str | Path | None) -> str | None:
    """``image_dir`` as a path relative to the folder the YAML is written to (absolute stays)."""
    if image_dir is None or Path(image_dir).is_absolute() or output is None:
        return image_dir
    return os.path.relpath(Path(image_dir).resolve(), Path(output).resolve().parent)
