"""What an SD3 / Flux-era weight file holds, from its keys and shapes (never from its name).

Users have these models as one all-in-one file (ComfyUI's and Stability's: transformer under
``model.diffusion_model.``, ``text_encoders.clip_l|clip_g|t5xxl.transformer.*``, VAE under
``first_stage_model.``) or split: a transformer alone (bare keys as Black Forest Labs ships Flux, or
under ``model.diffusion_model.``), each text encoder alone (transformers' names: ``clip_l``,
``clip_g``, ``t5xxl``), the VAE alone (Flux's ``ae.safetensors``). ``find_parts`` names each part and
where its keys start; ``detect`` (the one detection module) asks here for these families.
Flux dev has a guidance embedding (``guidance_in``), schnell none.
"""

from __future__ import annotations

from dataclasses import dataclass

Shapes = dict[str, tuple[int, ...]]
UNET = "model.diffusion_model."
VAE = "first_stage_model."
_TRANSFORMER_PREFIXES = (UNET, "")
# family -> the key (after the prefix) every transformer of that family has
TRANSFORMER_MARKERS = {
    "sd3": "joint_blocks.0.x_block.attn.qkv.weight",
    "flux": "double_blocks.0.img_attn.qkv.weight",
}
FLUX_GUIDANCE = "guidance_in.in_layer.weight"
ENCODER_NAMES = ("clip_l", "clip_g", "t5xxl")
# full-size widths that tell CLIP-L from OpenCLIP bigG (CLIP-G) in a file holding one CLIP alone
CLIP_WIDTHS = {768: "clip_l", 1280: "clip_g"}
_CLIP_NORM = "text_model.final_layer_norm.weight"
_T5_BLOCK = "encoder.block.0.layer.0.SelfAttention.q.weight"


@dataclass(frozen=True)
class Transformer:
    """A diffusion transformer in a file: its family, variant and where its keys start."""

    family: str  # "sd3" or "flux"
    prefix: str
    variant: str  # Flux: "dev" (guidance embedding) or "schnell"; SD3: "sd3"
    in_channels: int  # latent channels (after Flux's 2x2 packing: 64 for 16 channels)

    def label(self) -> str:
        return "SD3 transformer" if self.family == "sd3" else f"Flux {self.variant} transformer"


@dataclass(frozen=True)
class TextEncoder:
    """One text encoder in a file: its kind (clip / t5), width, name if the width tells, prefix."""

    kind: str  # "clip" or "t5"
    width: int
    prefix: str
    name: str | None  # "clip_l", "clip_g", "t5xxl"; None for a CLIP of no full-size width (tiny)
    projection: bool = False  # holds a text projection (SD3's CLIPs: their pooled output)

    def label(self) -> str:
        what = self.name or f"CLIP text encoder, width {self.width}"
        return "T5 text encoder" if self.kind == "t5" else what


@dataclass(frozen=True)
class Parts:
    """The parts one file holds."""

    transformer: Transformer | None
    text_encoders: tuple[TextEncoder, ...]
    vae_prefix: str | None
    vae_channels: int | None  # the VAE's latent channels (16 for SD3 / Flux)

    @property
    def all_in_one(self) -> bool:
        return self.transformer is not None and bool(self.text_encoders) and self.vae_prefix is not None

    def label(self) -> str:
        """'Flux dev transformer', 'SD3 checkpoint (transformer, clip_l, clip_g, t5xxl, VAE)', 'clip_g'..."""
        names = [e.name or e.kind for e in self.text_encoders]
        if self.transformer is not None and (names or self.vae_prefix is not None):
            inside = ", ".join(["transformer", *names, *(["VAE"] if self.vae_prefix is not None else [])])
            family = self.transformer.label().removesuffix(" transformer")
            return f"{family} checkpoint ({inside})"
        if self.transformer is not None:
            return self.transformer.label()
        if self.text_encoders:
            return " + ".join(e.label() for e in self.text_encoders)
        if self.vae_prefix is not None:
            return f"VAE, {self.vae_channels} latent channels"
        return "nothing recognised"


def find_transformer(shapes: Shapes) -> Transformer | None:
    """The SD3 or Flux transformer in ``shapes``, if any."""
    for prefix in _TRANSFORMER_PREFIXES:
        for family, marker in TRANSFORMER_MARKERS.items():
            if prefix + marker not in shapes:
                continue
            if family == "sd3":
                channels = shapes.get(prefix + "x_embedder.proj.weight", (0, 0))[1]
                return Transformer(family, prefix, "sd3", channels)
            variant = "dev" if prefix + FLUX_GUIDANCE in shapes else "schnell"
            return Transformer(family, prefix, variant, shapes.get(prefix + "img_in.weight", (0, 0))[1])
    return None


def find_text_encoder(shapes: Shapes, prefix: str = "") -> TextEncoder | None:
    """The CLIP or T5 text encoder whose keys start with ``prefix``, if any."""
    norm = shapes.get(prefix + _CLIP_NORM)
    if norm is not None:
        width = norm[0]
        projection = prefix + "text_projection.weight" in shapes
        return TextEncoder("clip", width, prefix, CLIP_WIDTHS.get(width), projection)
    shared = shapes.get(prefix + "shared.weight") or shapes.get(prefix + "encoder.embed_tokens.weight")
    if shared is not None and prefix + _T5_BLOCK in shapes:
        return TextEncoder("t5", shared[1], prefix, "t5xxl")
    return None


def find_parts(shapes: Shapes) -> Parts:
    """Every part ``shapes`` holds (a part absent is None or left out)."""
    encoders = []
    for name in ENCODER_NAMES:  # an all-in-one file names its encoders
        found = find_text_encoder(shapes, f"text_encoders.{name}.transformer.")
        if found is not None:
            encoders.append(TextEncoder(found.kind, found.width, found.prefix, name, found.projection))
    if not encoders and (alone := find_text_encoder(shapes)) is not None:
        encoders.append(alone)
    vae_prefix, channels = None, None
    for prefix in (VAE, ""):
        conv = shapes.get(prefix + "decoder.conv_in.weight")
        if conv is not None and prefix + "encoder.conv_in.weight" in shapes:
            vae_prefix, channels = prefix, conv[1]
            break
    return Parts(find_transformer(shapes), tuple(encoders), vae_prefix, channels)


def transformer_parts(shapes: Shapes) -> Parts | None:
    """What an SD3 / Flux-era file holds, or None when it holds no SD3 / Flux transformer and no
    T5 or CLIP text encoder on its own (an SD checkpoint, a LoRA...)."""
    parts = find_parts(shapes)
    return parts if parts.transformer is not None or parts.text_encoders else None
