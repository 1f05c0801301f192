"""What an SD 2.1 unCLIP single file's header says of its image side (``detect`` asks it of SD 2.x
files): the class-embedding width, the image encoder's tower, and what keeps them from loading."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sdflow.models.unclip import MAX_NOISE_LEVEL

Shapes = dict[str, tuple[int, ...]]
UNET = "model.diffusion_model."
# SD 2.1 unCLIP files (Stability's sd21-unclip-h / -l): the UNet's class (adm) embedding reads
# [image embeds, noise-level embedding]; the image encoder is the visual tower of an OpenCLIP ViT-H
# (-h) or OpenAI CLIP ViT-L (-l) model, both in OpenCLIP's key names; the noise augmentor keeps its
# DDPM schedule (its normaliser's data_mean / data_std are not saved by Stability's code)
LABEL_EMB = UNET + "label_emb.0.0.weight"
EMBEDDER = "embedder.model.visual."
NOISE_AUGMENTOR = "noise_augmentor."
# the known unCLIP image encoders by tower width: (variant, layers, embeds width)
UNCLIP_ENCODERS = {1280: ("H", 32, 1024), 1024: ("L", 24, 768)}
ENCODER = f"image encoder ({EMBEDDER}*)"


@dataclass(frozen=True)
class UnclipFacts:
    """What an unCLIP single file's header says of its image side."""

    class_width: int  # the UNet's class-label width: 2 x the image embeds' width
    encoder_width: int | None  # the image encoder's tower width (None: the file holds no encoder)
    encoder_layers: int
    problem: str | None = None  # what in the header keeps the image side from loading

    @property
    def embeds_width(self) -> int:
        return self.class_width // 2

    @property
    def variant(self) -> str | None:
        """'H' (OpenCLIP ViT-H, sd21-unclip-h), 'L' (OpenAI ViT-L, sd21-unclip-l) or None (another)."""
        for width, (name, layers, embeds) in UNCLIP_ENCODERS.items():
            tower = self.encoder_width is None or (self.encoder_width, self.encoder_layers) == (width, layers)
            if self.embeds_width == embeds and tower:
                return name
        return None

    def label(self) -> str:
        """'unCLIP-H', 'unCLIP (48-wide image embeds)', '... without its image encoder'."""
        text = f"unCLIP-{self.variant}" if self.variant else f"unCLIP ({self.embeds_width}-wide image embeds)"
        return text if self.encoder_width is not None else text + " without its image encoder"


def unclip_facts(shapes: Shapes) -> UnclipFacts | None:
    """The unCLIP side of an SD 2.x file (None: its UNet reads no class labels)."""
    label = shapes.get(LABEL_EMB)
    if label is None or len(label) != 2:
        return None
    patch = shapes.get(EMBEDDER + "conv1.weight")
    resblocks = EMBEDDER + "transformer.resblocks."
    layers = len({k[len(resblocks) :].split(".")[0] for k in shapes if k.startswith(resblocks)})
    facts = UnclipFacts(label[1], patch[0] if patch else None, layers)
    return replace(facts, problem=_unclip_problem(shapes, facts))


def _unclip_problem(shapes: Shapes, facts: UnclipFacts) -> str | None:
    """What in the header keeps an unCLIP file's image side from loading (None: nothing seen)."""
    if facts.class_width % 2:
        return f"its UNet's class embedding reads {facts.class_width} values: unCLIP's are 2 x the embeds"
    if facts.encoder_width is None and any(k.startswith(EMBEDDER) for k in shapes):
        return f"its {ENCODER} is incomplete: no {EMBEDDER}conv1.weight"
    projection = shapes.get(EMBEDDER + "proj")
    if facts.encoder_width is not None and projection is None:
        return f"its {ENCODER} is incomplete: no {EMBEDDER}proj (the image embeds' projection)"
    if projection is not None and (len(projection) != 2 or projection[1] != facts.embeds_width):
        return (
            f"its {ENCODER} makes {projection[-1]}-wide image embeds ({EMBEDDER}proj {list(projection)}) "
            f"but its UNet's class embedding reads {facts.embeds_width}-wide ones "
            f"(label_emb.0.0.weight: {facts.class_width} = embeds + noise-level embedding)"
        )
    for name in ("data_mean", "data_std"):
        shape = shapes.get(NOISE_AUGMENTOR + name)
        if shape is not None and shape not in ((facts.embeds_width,), (1, facts.embeds_width)):
            return f"{NOISE_AUGMENTOR}{name} is {list(shape)}, not the embeds' {facts.embeds_width} values"
    for name in ("betas", "alphas_cumprod"):
        shape = shapes.get(NOISE_AUGMENTOR + name)
        if shape is not None and shape != (MAX_NOISE_LEVEL,):
            return f"{NOISE_AUGMENTOR}{name} is {list(shape)}: the augmentation has {MAX_NOISE_LEVEL} levels"
    return None
