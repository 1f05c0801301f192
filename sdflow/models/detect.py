"""The one family-detection module: which model family a checkpoint holds (never from its name).

Its sources, the first two tables checked in order (most specific first): a new family is one more entry.
- a single file's keys and shapes: ``LAYOUTS`` (how the family is stored in an original LDM / sgm file:
  marker keys, where UNet, VAE and text encoder(s) live, which shipped config folder describes it);
- a diffusers folder's (or hub id's) JSON files: ``FOLDER_RULES``;
- the conditioning width a LoRA or an embedding was made for: ``lora_family``, ``embedding_family``;
- a ControlNet's added embedding and width: ``control_family``.
Loading, the runner's checks before a run (``checkpoint_family``) and `sdflow models` (``describe``)
all ask here. References: diffusers' ``infer_diffusers_model_type``, ComfyUI's ``model_detection``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sdflow.models import resolver
from sdflow.models.dit_detect import find_transformer
from sdflow.models.families import FAMILIES, FLUX, SD2, SD3, SD15, SDXL, SDXL_REFINER, Family
from sdflow.models.folder_configs import FolderFacts, UnreadableConfig
from sdflow.models.unclip_detect import EMBEDDER, UnclipFacts, unclip_facts
from sdflow.models.weights import WeightReader, is_pickle, read_header

Shapes = dict[str, tuple[int, ...]]
UNET = "model.diffusion_model."
VAE = "first_stage_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
PREDICTIONS = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class TextEncoderPart:
    """One text encoder of a single file: its diffusers component, key prefix and key style."""

    component: str  # "text_encoder" or "text_encoder_2"
    prefix: str
    style: str  # "clip" (transformers' CLIPTextModel names) or "openclip" (fused q/k/v resblocks)


@dataclass(frozen=True)
class Layout:
    """How one family is laid out in a single file."""

    family: Family
    config: str  # folder under sdflow/models/configs holding the diffusers configs and tokenizer(s)
    markers: tuple[str, ...]  # a file is this layout when it has any of these keys (and a UNet)
    text_encoders: tuple[TextEncoderPart, ...]
    unet_prefix: str = UNET
    vae_prefix: str = VAE
    unclip: bool = False  # its files may be unCLIP models (class embedding and image encoder)
    # ComfyUI's heuristic for SD 2.x (768-v vs 512 eps): std of the last output block's first
    # transformer norm1 bias > 0.09 means v-prediction; only for 4-channel UNets.
    v_by_norm_std: bool = False

    def matches(self, shapes: Shapes) -> bool:
        return CONV_IN in shapes and any(m in shapes for m in self.markers)


# Stability's sgm layout (SDXL): text encoders under conditioner.embedders.N; the base has CLIP ViT-L
# (transformers names) then OpenCLIP ViT-bigG (fused q/k/v), the refiner only the bigG.
_SGM = "conditioner.embedders."

LAYOUTS: list[Layout] = [
    Layout(
        SDXL,
        "sdxl",
        (_SGM + "1.model.ln_final.weight",),
        (
            TextEncoderPart("text_encoder", _SGM + "0.transformer.", "clip"),
            TextEncoderPart("text_encoder_2", _SGM + "1.model.", "openclip"),
        ),
    ),
    Layout(
        SDXL_REFINER,
        "sdxl_refiner",
        (_SGM + "0.model.ln_final.weight",),
        (TextEncoderPart("text_encoder_2", _SGM + "0.model.", "openclip"),),
    ),
    Layout(
        SD2,
        "sd2",
        ("cond_stage_model.model.token_embedding.weight",),
        (TextEncoderPart("text_encoder", "cond_stage_model.model.", "openclip"),),
        v_by_norm_std=True,
        unclip=True,
    ),
    Layout(
        SD15,
        "sd15",
        (
            "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
            "cond_stage_model.transformer.embeddings.token_embedding.weight",
        ),
        (TextEncoderPart("text_encoder", "cond_stage_model.transformer.", "clip"),),
    ),
]


@dataclass(frozen=True)
class Detection:
    """What a single file holds: its layout, whether it inpaints, and the prediction if known."""

    layout: Layout
    in_channels: int
    prediction: str | None  # None: not decidable from the header alone
    reason: str  # why that prediction
    notes: list[str] = field(default_factory=list)
    unclip: UnclipFacts | None = None  # an SD 2.1 unCLIP file's image side

    @property
    def family(self) -> Family:
        return self.layout.family

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    def label(self) -> str:
        """'SD 2.x inpainting', 'SD 2.x (v_prediction)', 'SD 2.x unCLIP-H'..."""
        text = self.family.label + (" inpainting" if self.inpainting else "")
        text += f" {self.unclip.label()}" if self.unclip else ""
        return f"{text} ({self.prediction})" if self.prediction and self.prediction != "epsilon" else text


class UnknownLayout(ValueError):
    """No layout matches; the message lists what was recognised in the file."""


def detect(shapes: Shapes, metadata: dict[str, str] | None = None) -> Detection:
    """The layout of a single file from its keys and shapes (and safetensors metadata)."""
    for layout in LAYOUTS:
        if layout.matches(shapes):
            prediction, reason = prediction_from_header(shapes, metadata or {})
            unclip = unclip_facts(shapes) if layout.unclip else None
            return Detection(layout, shapes[CONV_IN][1], prediction, reason, unclip=unclip)
    raise UnknownLayout(unknown_message(shapes))


def inspect(path: Path, allow_pickle: bool = False) -> Detection:
    """Detect what a single file holds from its header (UnknownLayout, WeightFileError if not)."""
    with WeightReader(path, allow_pickle) as reader:
        return detect(reader.shapes, reader.metadata)


def detection(path: Path) -> Detection:
    """``inspect`` of a safetensors file, remembered while its size and mtime stay the same (prechecks
    and the family check read it before every run)."""
    stat = path.stat()
    return _detection(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _detection(path: str, size: int, mtime_ns: int) -> Detection:
    return inspect(Path(path))


def prediction_from_header(shapes: Shapes, metadata: dict[str, str]) -> tuple[str | None, str]:
    """The prediction type the file declares: modelspec metadata or a ``v_pred`` marker key."""
    declared = metadata.get("modelspec.prediction_type", "").strip().lower()
    if declared in ("v", "v_prediction"):
        return "v_prediction", "its modelspec.prediction_type metadata"
    if declared in ("epsilon", "eps"):
        return "epsilon", "its modelspec.prediction_type metadata"
    if metadata.get("modelspec.architecture", "").endswith("-v"):
        return "v_prediction", f"its modelspec.architecture '{metadata['modelspec.architecture']}'"
    if "v_pred" in shapes:
        return "v_prediction", "its 'v_pred' marker key"
    return None, "nothing in the file declares it"


def norm_std_key(shapes: Shapes) -> str | None:
    """The key ComfyUI's SD 2.x v-prediction heuristic reads: the last output block's first
    transformer norm1 bias (``output_blocks.11...`` in a full-size UNet)."""
    keys = [k for k in shapes if k.startswith(UNET + "output_blocks.")]
    keys = [k for k in keys if k.endswith(".1.transformer_blocks.0.norm1.bias")]
    return max(keys, key=lambda k: int(k[len(UNET + "output_blocks.") :].split(".")[0]), default=None)


# -- telling the user what the file is when it is no checkpoint we load -------------------------


def _any_prefix(prefix: str) -> Callable[[Shapes], bool]:
    return lambda shapes: any(k.startswith(prefix) for k in shapes)


_RECOGNISERS: list[tuple[str, Callable[[Shapes], bool]]] = [
    ("an SD-style UNet (model.diffusion_model.*)", lambda s: CONV_IN in s),
    ("an SD-style VAE (first_stage_model.*)", _any_prefix(VAE)),
    ("a CLIP text encoder (cond_stage_model.transformer.*)", _any_prefix("cond_stage_model.transformer.")),
    ("an OpenCLIP text encoder (cond_stage_model.model.*)", _any_prefix("cond_stage_model.model.")),
    ("SDXL-style text encoders (conditioner.embedders.*)", _any_prefix("conditioner.embedders.")),
    ("an unCLIP image encoder (embedder.model.visual.*)", _any_prefix(EMBEDDER)),
    (
        "a LoRA (lora_* keys): load it with LoadLoRA",
        lambda s: any(".lora_" in k or k.startswith("lora_") or "lora_down" in k for k in s),
    ),
    (
        "a VAE on its own (encoder.* / decoder.*): load it with LoadVAE",
        lambda s: "encoder.conv_in.weight" in s and "decoder.conv_out.weight" in s,
    ),
    (
        "a diffusers-layout UNet (down_blocks.*): use its diffusers folder instead",
        lambda s: "conv_in.weight" in s and any(k.startswith("down_blocks.") for k in s),
    ),
    (
        "a transformer-based diffusion model (SD3 / Flux-style blocks)",
        lambda s: any(("joint_blocks." in k or "double_blocks." in k) for k in s),
    ),
]


def recognised(shapes: Shapes) -> list[str]:
    """Descriptions of the parts of a state dict that are recognised."""
    return [text for text, test in _RECOGNISERS if test(shapes)]


def unknown_message(shapes: Shapes) -> str:
    parts = recognised(shapes)
    found = "; ".join(parts) if parts else "nothing known"
    known = ", ".join(f"{layout.family.label} (needs {layout.markers[0]})" for layout in LAYOUTS)
    sample = ", ".join(sorted(shapes)[:3]) or "no tensors"
    return (
        f"not a checkpoint layout sdflow loads ({len(shapes)} tensors, e.g. {sample}). Recognised: "
        f"{found}. Loadable single files: {known}, each with model.diffusion_model.* and "
        "first_stage_model.* weights"
    )


# -- diffusers folders: model_index.json and the component configs -------------------------------


class UnknownFamily(ValueError):
    """The files describe no family sdflow knows how to run (or cannot be read)."""


@dataclass(frozen=True)
class FolderRule:
    """A diffusers folder holds ``family`` when ``matches`` says so."""

    family: Family
    matches: Callable[[FolderFacts], bool]


def _transformer(pipeline_prefix: str, transformer: str) -> Callable[[FolderFacts], bool]:
    """A folder whose model_index names the family's pipeline or whose transformer is its class."""
    return lambda f: f.pipeline.startswith(pipeline_prefix) or f.transformer_class == transformer


FOLDER_RULES: list[FolderRule] = [
    FolderRule(SD3, _transformer("StableDiffusion3", "SD3Transformer2DModel")),
    FolderRule(FLUX, _transformer("Flux", "FluxTransformer2DModel")),
    FolderRule(
        SDXL, lambda f: f.text_time and f.time_id_count == SDXL.time_id_count and f.has("text_encoder")
    ),
    FolderRule(SDXL_REFINER, lambda f: f.text_time and f.time_id_count == SDXL_REFINER.time_id_count),
    # SD 2.x: its OpenCLIP ViT-H text encoder uses GELU (SD 1.x's CLIP ViT-L quick GELU), as tiny models too
    FolderRule(
        SD2,
        lambda f: (
            not f.text_time
            and not f.has("text_encoder_2")
            and (f.unet.get("cross_attention_dim") == SD2.context_dim or f.text_encoder_act == "gelu")
        ),
    ),
    FolderRule(SD15, lambda f: not f.text_time and not f.has("text_encoder_2")),
]


def folder_family(location: str) -> Family:
    """The family of a diffusers folder or hub id, from its JSON files (UnknownFamily if none fits)."""
    return _folder_family(FolderFacts(location))


def _folder_family(facts: FolderFacts) -> Family:
    for rule in FOLDER_RULES:
        if rule.matches(facts):
            return rule.family
    raise UnknownFamily(f"{facts.location}: {_mismatch(facts)}")


def _mismatch(facts: FolderFacts) -> str:
    if not facts.text_time:
        return "it has a second text encoder but its UNet has no SDXL text_time embedding"
    if facts.pooled_dim is None:
        return "its UNet is SDXL's (text_time embedding) but it has no text_encoder_2"
    time_dim = facts.unet.get("addition_time_embed_dim") or 0
    return (
        f"its UNet's text_time embedding takes {facts.unet.get('projection_class_embeddings_input_dim')} "
        f"values, which fits neither SDXL base (pooled {facts.pooled_dim} + 6 x {time_dim}, two text "
        f"encoders) nor the refiner (pooled + 5 x {time_dim})"
    )


# -- without loading, for the checks before a run and `sdflow models` ----------------------------

# what folder detection reads of a diffusers folder: each answer is remembered while these stay the same
_FOLDER_FILES = (
    "model_index.json",
    "unet/config.json",
    "transformer/config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
)


def checkpoint_family(spec: str) -> Family | None:
    """The family of the checkpoint a LoadCheckpoint ``checkpoint`` field names, or None if unknown
    (pickles, hub ids and whatever cannot be read: no early check, loading reports it)."""
    try:
        source = resolver.checkpoint(spec)
        if source.kind == "file" and not is_pickle(source.path):
            transformer = find_transformer(read_header(source.path).shapes())  # SD3 / Flux files
            return FAMILIES[transformer.family] if transformer else detection(source.path).family
        if source.kind == "folder":
            return known_folder_family(source.path)
    except (LookupError, OSError, ValueError):  # not found, unreadable, unknown layout
        return None
    return None


def known_folder_family(folder: Path) -> Family | None:
    """The family of a diffusers folder, as loading decides it, or None when none fits."""
    found = _folder_detection(str(folder), _stamps(folder))
    return found[0] if found else None


def folder_label(folder: Path) -> str | None:
    """'SD 1.x', 'SDXL refiner', 'SD 1.x inpainting', 'SD 2.x unCLIP'... for a diffusers folder, None
    if unknown."""
    found = _folder_detection(str(folder), _stamps(folder))
    if found is None:
        return None
    family, channels, unclip = found
    return family.label + (" inpainting" if channels == 9 else "") + (" unCLIP" if unclip else "")


def _stamps(folder: Path) -> tuple[tuple[int, int] | None, ...]:
    stamps = []
    for name in _FOLDER_FILES:
        try:
            stat = (folder / name).stat()
            stamps.append((stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


@functools.lru_cache(maxsize=256)
def _folder_detection(
    location: str, stamps: tuple[tuple[int, int] | None, ...]
) -> tuple[Family, int | None, bool] | None:
    """(family, UNet input channels, an unCLIP UNet: a projection class embedding) of a folder."""
    try:
        facts = FolderFacts(location)
        family = _folder_family(facts)
        return family, facts.in_channels, family is SD2 and facts.unet.get("class_embed_type") == "projection"
    except (UnknownFamily, UnreadableConfig):
        return None
