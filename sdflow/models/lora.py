"""LoRA files: their key formats, and the weight deltas they make for a model's layers.

Two formats are read, for SD 1.x/2.x and SDXL (base and refiner) alike:

- kohya / A1111: ``lora_unet_<module>``, ``lora_te_<module>`` / ``lora_te1_<module>`` (the first text
  encoder) and ``lora_te2_<module>`` (SDXL's second, OpenCLIP bigG), module paths with ``_`` for ``.``;
  UNet modules by their diffusers or their original LDM/SGM names (``input_blocks_4_1_...``), each
  with ``.lora_down.weight``, ``.lora_up.weight`` and an optional ``.alpha``; LoCon layers (conv
  kernels in ``lora_down``) too.
- diffusers / PEFT: ``unet.<module>``, ``text_encoder.<module>`` and ``text_encoder_2.<module>`` with
  ``.lora_A.weight`` / ``.lora_B.weight`` (or the older ``.lora.down.weight`` / ``.lora.up.weight``,
  ``.lora_linear_layer.*`` and attention-processor ``.processor.to_q_lora.*`` spellings).

Layers are grouped by target, named as diffusers names a checkpoint's folders (``unet``,
``text_encoder``, ``text_encoder_2``); which encoder of a model that is, the loader decides.

A layer's delta is ``(alpha / rank) * up @ down`` (alpha from the file's ``.alpha`` keys or PEFT's
adapter metadata, else the rank: a scale of 1), as diffusers' ``fuse_lora`` adds it; the node
multiplies it by its strength. Kohya-named files may also hold LyCORIS LoHa and LoKr layers (alone or
mixed with plain ones), whose updates sdflow/models/lycoris.py makes; Tucker and DoRA are refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace

import torch

from sdflow.models import lycoris
from sdflow.models.dit_keys import flux_mapping, sd3_mapping
from sdflow.models.ldm_keys import Source, swap_halves, unet_mapping

_DIT_MAPPINGS = {"SD3Transformer2DModel": sd3_mapping, "FluxTransformer2DModel": flux_mapping}

TARGETS = ("unet", "text_encoder", "text_encoder_2")

# key suffix -> role; the longest matching suffix wins
_SUFFIXES: dict[str, str] = {
    ".lora_down.weight": "down",
    ".lora_up.weight": "up",
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down",
    ".lora_linear_layer.up.weight": "up",
    "_lora.down.weight": "down",  # attention processors: ...processor.to_q_lora.down.weight
    "_lora.up.weight": "up",
    ".alpha": "alpha",
    **lycoris.ROLES,
}
# keys of LoRA variants we do not apply: LyCORIS Tucker decompositions, DoRA's magnitudes
_UNSUPPORTED = re.compile(r"\.(lora_mid|hada_t[12]|lokr_t2|dora_scale|lora_magnitude_vector)\b")
_UNSUPPORTED_KINDS = {
    "lora_mid": "Tucker",
    "hada_t1": "Tucker",
    "hada_t2": "Tucker",
    "lokr_t2": "Tucker",
    "dora_scale": "DoRA",
    "lora_magnitude_vector": "DoRA",
}
_KOHYA_PREFIXES = {
    "lora_unet_": "unet",
    "lora_te_": "text_encoder",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
}
# SD3 / Flux LoRAs name the denoiser "transformer": it is the model's, as a UNet is
_DIFFUSERS_PREFIXES = {
    "unet.": "unet",
    "transformer.": "unet",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
}


class LoraError(ValueError):
    """The file is not a LoRA we can apply, or it does not fit the model."""


@dataclass(frozen=True)
class LoraLayer:
    """One low-rank update: ``delta = scale * up @ down`` for the layer called ``name``."""

    target: str  # one of TARGETS
    name: str  # as the file writes it: kohya's flat name or a dotted module path
    flat: bool  # kohya's flat name ('_' for '.'), which must be matched against module paths
    down: torch.Tensor
    up: torch.Tensor
    scale: float = 1.0  # alpha / rank (alpha / sqrt(rank) for rsLoRA)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the weight this layer updates (LoraError for an up kernel other than 1x1)."""
        if self.down.dim() == 2:
            return (int(self.up.shape[0]), int(self.down.shape[1]))
        if self.up.dim() != 4 or tuple(self.up.shape[2:]) != (1, 1):
            raise LoraError(f"layer {self.name}: unsupported lora_up kernel {tuple(self.up.shape)}")
        return (int(self.up.shape[0]), *(int(d) for d in self.down.shape[1:]))

    def delta(self, device: torch.device) -> torch.Tensor:
        """The weight update in float32 on ``device``, shaped like the layer's weight."""
        down = self.down.to(device, torch.float32)
        up = self.up.to(device, torch.float32)
        # conv (LoCon): the 1x1 up kernel mixes the rank channels of every tap of the down kernel
        return (up.flatten(1) @ down.flatten(1)).reshape(self.shape) * self.scale


Layer = LoraLayer | lycoris.LohaLayer | lycoris.LokrLayer  # each: target, name, flat, shape, delta()


@dataclass
class LoraFile:
    """The layers of a LoRA file, and the format they were written in."""

    format: str  # "kohya" or "diffusers"
    layers: list[Layer] = field(default_factory=list)

    def for_target(self, target: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.target == target]


def parse(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> LoraFile:
    """The LoRA layers in a state dict; LoraError when it holds none, or any of a kind we do not apply."""
    _refuse_variants(tensors)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        suffix = max((s for s in _SUFFIXES if key.endswith(s)), key=len, default=None)
        if suffix is not None:
            parts.setdefault(key[: -len(suffix)], {})[_SUFFIXES[suffix]] = tensor
    stems = {
        stem: roles
        for stem, roles in parts.items()
        if ("down" in roles and "up" in roles) or lycoris.is_lycoris(roles)
    }
    if not stems:
        sample = ", ".join(list(tensors)[:3]) or "no tensors"
        raise LoraError(
            "not a LoRA file: no lora_down/lora_up, lora_A/lora_B, hada_ or lokr_ weights "
            f"(keys: {sample}...)"
        )
    kohya = any(stem.startswith(tuple(_KOHYA_PREFIXES)) for stem in stems)
    adapters = _peft_adapters(metadata or {})
    lora = LoraFile("kohya" if kohya else "diffusers")
    for stem, roles in stems.items():
        if lycoris.is_lycoris(roles):
            lora.layers.append(_lycoris_layer(stem, roles))
            continue
        target, name, flat = _locate(stem)
        rank = int(roles["down"].shape[0])
        if "alpha" in roles:
            scale = float(roles["alpha"]) / rank
        elif target in adapters:
            scale = adapters[target].scale(name, rank)
        else:
            scale = 1.0  # no alpha anywhere: PEFT's default lora_alpha = r
        lora.layers.append(LoraLayer(target, name, flat, roles["down"], roles["up"], scale))
    return lora


def _refuse_variants(tensors: dict[str, torch.Tensor]) -> None:
    """LoraError for a file with keys of a variant we do not apply (Tucker, DoRA): never half applied."""
    unsupported = [key for key in tensors if _UNSUPPORTED.search(key)]
    if unsupported:
        kinds = sorted({_UNSUPPORTED_KINDS[_UNSUPPORTED.search(k).group(1)] for k in unsupported})
        raise LoraError(
            f"a {' and '.join(kinds)} LoRA (keys such as {unsupported[0]}), which is "
            "not supported (plain LoRA, LoCon, LoHa and LoKr layers are)"
        )


def _lycoris_layer(stem: str, roles: dict[str, torch.Tensor]) -> Layer:
    """The LoHa / LoKr layer of a kohya-named stem (others' scaling rules, e.g. PEFT's, differ)."""
    if not stem.startswith(tuple(_KOHYA_PREFIXES)):
        raise LoraError(
            f"layer {stem}: LoHa / LoKr layers are read in the kohya naming only "
            f"({', '.join(_KOHYA_PREFIXES)})"
        )
    try:
        return lycoris.layer(*_locate(stem), roles)
    except lycoris.LycorisError as exc:
        raise LoraError(f"layer {stem}: {exc}") from None


def _locate(stem: str) -> tuple[str, str, bool]:
    """(target, layer name, is the name flat) for a key stem."""
    for prefix, target in _KOHYA_PREFIXES.items():
        if stem.startswith(prefix):
            return target, stem[len(prefix) :], True
    if stem.startswith("base_model.model."):  # raw PEFT of a lone UNet
        stem = stem[len("base_model.model.") :]
    target = "unet"
    for prefix, named in _DIFFUSERS_PREFIXES.items():
        if stem.startswith(prefix):
            target, stem = named, stem[len(prefix) :]
            break
    # attention processors name the projection inside the processor: attn1.processor.to_out -> attn1.to_out.0
    stem = re.sub(r"\.processor\.(to_[qkv]|to_out)$", r".\1", stem)
    if stem.endswith(".to_out"):
        stem += ".0"
    return target, stem, False


@dataclass(frozen=True)
class _PeftAdapter:
    """The scaling part of a PEFT LoraConfig, as diffusers writes it into the safetensors header."""

    lora_alpha: float
    alpha_pattern: dict[str, float]
    rslora: bool

    def scale(self, name: str, rank: int) -> float:
        # as PEFT: the first pattern matching the end of the module path overrides lora_alpha
        alpha = next(
            (float(a) for p, a in self.alpha_pattern.items() if re.match(rf"(.*\.)?{p}$", name)),
            self.lora_alpha,
        )
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank


def _peft_adapters(metadata: dict[str, str]) -> dict[str, _PeftAdapter]:
    """Per-target adapter configs from diffusers' ``lora_adapter_metadata`` header, if any."""
    text = metadata.get("lora_adapter_metadata")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError:
        return {}
    adapters: dict[str, _PeftAdapter] = {}
    for target in TARGETS:
        if config.get(f"{target}.use_dora"):
            raise LoraError("this is a DoRA LoRA (use_dora), which is not supported")
        alpha = config.get(f"{target}.lora_alpha")
        if isinstance(alpha, (int, float)):
            pattern = config.get(f"{target}.alpha_pattern") or {}
            adapters[target] = _PeftAdapter(
                float(alpha), dict(pattern), bool(config.get(f"{target}.use_rslora"))
            )
    return adapters


def match(layers: list[Layer], root: torch.nn.Module, what: str) -> tuple[dict[str, list[Layer]], list[str]]:
    """(module path -> the layers updating it, names of layers that match no module of ``root``). A
    shape that does not fit its module is a LoraError: the LoRA was made for another model family.
    A kohya layer on an SD3 / Flux original-layout module fused from several (q, k, v in one ``qkv``)
    updates each of them with its rows."""
    index = _module_index(root)
    fused = _fused_index(root)
    found: dict[str, list[Layer]] = {}
    unmatched: list[str] = []
    for whole in layers:
        pieces = fused.get(whole.name, []) if whole.flat else []
        if pieces:
            targets = [
                (path, _rows(whole, source, root.get_submodule(path).weight.shape)) for path, source in pieces
            ]
        else:
            targets = [(index.get(("flat", whole.name) if whole.flat else ("dotted", whole.name)), whole)]
        for path, layer in targets:
            if path is None:
                unmatched.append(layer.name)
                continue
            weight = tuple(root.get_submodule(path).weight.shape)
            if layer.shape not in (weight, lycoris.flat_size(weight)):
                raise LoraError(
                    f"{what} layer {layer.name}: the LoRA's update is {layer.shape} but the model's "
                    f"weight is {weight} (a LoRA for another model family?)"
                )
            found.setdefault(path, []).append(layer)
    return found, unmatched


def _rows(layer: Layer, source: Source, shape: torch.Size) -> Layer:
    """The part of a fused module's update that falls on one diffusers module (rows of ``up``)."""
    if not isinstance(layer, LoraLayer):
        raise LoraError(
            f"layer {layer.name}: LoHa / LoKr updates of fused SD3 / Flux layers are not supported"
        )
    if source.kind == "swap":
        return replace(layer, up=swap_halves(layer.up))
    if not source.fused:
        return layer
    start = source.start(tuple(shape))
    return replace(layer, up=layer.up[start : start + shape[0]])


def _fused_index(root: torch.nn.Module) -> dict[str, list[tuple[str, Source]]]:
    """For an SD3 / Flux denoiser: each original-layout module's flat kohya name -> the diffusers
    modules it is made of and where they lie in it (empty for other models)."""
    inner = getattr(root, "transformer", None)
    mapping = _DIT_MAPPINGS.get(type(inner).__name__)
    if mapping is None:
        return {}
    table = mapping(dict(inner.config), "")
    index: dict[str, list[tuple[str, Source]]] = {}
    for path, module in inner.named_modules():
        source = table(path + ".weight") if isinstance(module, torch.nn.Linear) else None
        if source is not None:
            flat = source.key.removesuffix(".weight").replace(".", "_")
            index.setdefault(flat, []).append(("transformer." + path, source))
    return index


def delta(layers: list[Layer], weight: torch.Tensor) -> torch.Tensor:
    """The summed float32 update of ``layers`` for ``weight``, on its device (made one module at a
    time while patching, so the updates of a whole LoRA never sit in memory together)."""
    total = layers[0].delta(weight.device).reshape(weight.shape)
    for layer in layers[1:]:
        total += layer.delta(weight.device).reshape(weight.shape)
    return total


def _module_index(root: torch.nn.Module) -> dict[tuple[str, str], str]:
    """Names a LoRA may use for each Linear/Conv2d of ``root`` -> its module path. Text encoders are
    matched with and without transformers' ``text_model.`` wrapper (transformers 5 dropped it); UNet
    layers by their diffusers names and, flat, by their original LDM names (``input_blocks_4_1_...``)."""
    config = getattr(root, "config", None)
    is_unet = getattr(config, "down_block_types", None) is not None  # (a denoiser wrapper: a namespace)
    ldm = unet_mapping(dict(config), prefix="") if is_unet else None
    index: dict[tuple[str, str], str] = {}
    for path, module in root.named_modules():
        if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        names = [path]
        if path.startswith("transformer.") and hasattr(root, "transformer"):  # an SD3 / Flux denoiser
            names.append(path[len("transformer.") :])
        if path.startswith("text_model."):
            names.append(path[len("text_model.") :])
        elif path.startswith(("encoder.", "embeddings.", "final_layer_norm")):
            names.append("text_model." + path)
        for name in names:
            index[("dotted", name)] = path
            index[("flat", name.replace(".", "_"))] = path
        source = ldm(path + ".weight") if ldm is not None else None
        if source is not None:
            index[("flat", source.key.removesuffix(".weight").replace(".", "_"))] = path
    return index
