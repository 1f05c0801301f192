"""Which model family a single file holds, decided from its keys and shapes (never its name).

Each ``Layout`` says how one family is stored in an original (LDM / sgm) single file: its marker
key, where UNet, VAE and text encoder(s) live, and which shipped config folder describes it. Adding
a family is one more ``Layout`` in ``LAYOUTS`` (checked in order, most specific first). References:
diffusers' ``infer_diffusers_model_type`` and ComfyUI's ``model_detection`` / ``supported_models``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sdflow.models.families import SD2, SD15, SDXL, SDXL_REFINER, Family

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

    @property
    def family(self) -> Family:
        return self.layout.family

    @property
    def inpainting(self) -> bool:
        return self.in_channels == 9

    def label(self) -> str:
        """'SD 2.x inpainting', 'SD 2.x (v_prediction)'..."""
        text = self.family.label + (" inpainting" if self.inpainting else "")
        return f"{text} ({self.prediction})" if self.prediction and self.prediction != "epsilon" else text


class UnknownLayout(ValueError):
    """No layout matches; the message lists what was recognised in the file."""


def detect(shapes: Shapes, metadata: dict[str, str] | None = None) -> Detection:
    """The layout of a single file from its keys and shapes (and safetensors metadata)."""
    for layout in LAYOUTS:
        if layout.matches(shapes):
            prediction, reason = prediction_from_header(shapes, metadata or {})
            return Detection(layout, shapes[CONV_IN][1], prediction, reason)
    raise UnknownLayout(unknown_message(shapes))


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

_RECOGNISERS: list[tuple[str, Callable[[Shapes], bool]]] = [
    ("an SD-style UNet (model.diffusion_model.*)", lambda s: CONV_IN in s),
    ("an SD-style VAE (first_stage_model.*)", lambda s: any(k.startswith(VAE) for k in s)),
    (
        "a CLIP text encoder (cond_stage_model.transformer.*)",
        lambda s: any(k.startswith("cond_stage_model.transformer.") for k in s),
    ),
    (
        "an OpenCLIP text encoder (cond_stage_model.model.*)",
        lambda s: any(k.startswith("cond_stage_model.model.") for k in s),
    ),
    (
        "SDXL-style text encoders (conditioner.embedders.*)",
        lambda s: any(k.startswith("conditioner.embedders.") for k in s),
    ),
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
