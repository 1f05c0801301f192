"""GLIGEN files: the gated self-attention layers ("fusers") of a UNet's transformer blocks and the
position net that turns (phrase, box) pairs into the objects they attend to.

Two layouts are read. ComfyUI's (gligen_sd14_textbox_pruned.safetensors, from the ``gligen`` model
folder) names each fuser by its LDM block, ``input_blocks.1.1.transformer_blocks.0.fuser.*``
(``middle_block.1...``, ``output_blocks.N.1...``; any prefix before the block is ignored), and the
position net ``position_net.*``. diffusers' (a UNet saved with ``attention_type="gated"``) names them
``down_blocks.0.attentions.0.transformer_blocks.0.fuser.*``. Inside a fuser and the position net both
use the same names (diffusers' GatedSelfAttentionDense and GLIGENTextBoundingboxProjection), so the
tensors load into those classes as they are. Only the text-box kind exists for SD 1.x/2.x ("text-image"
GLIGENs are refused).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sdflow.models import weights
from sdflow.models.families import SD2, SD15, Family

MAX_OBJECTS = 30  # the boxes a GLIGEN attends to at once (ComfyUI's and diffusers' max_objs)
POSITION = "position_net."
FUSER = ".fuser."
_LDM_BLOCK = re.compile(r"(?:^|\.)((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)\.")
_DIFFUSERS_BLOCK = re.compile(
    r"(?:^|\.)((?:down|up)_blocks\.\d+\.attentions\.\d+|mid_block\.attentions\.\d+)\."
)
_WIDTH_FAMILIES = {768: SD15, 1024: SD2}  # the phrase width of real GLIGENs -> their family


class GligenFileError(ValueError):
    """A file that is not a GLIGEN of a kind sdflow reads."""


@dataclass(frozen=True, eq=False)
class GligenWeights:
    """A loaded GLIGEN: each fuser's tensors by the block it belongs to (the file's own block name:
    ``input_blocks.1.1.transformer_blocks.0`` or ``down_blocks.0.attentions.0.transformer_blocks.0``),
    the position net's tensors, and the widths: ``phrase_width`` (the text encoder's pooled output
    the position net reads) and ``object_width`` (the objects it makes: the UNet's cross-attention)."""

    layout: str  # "ldm" | "diffusers"
    fusers: dict[str, dict[str, torch.Tensor]]
    position_net: dict[str, torch.Tensor]
    phrase_width: int
    object_width: int

    @property
    def family(self) -> Family | None:
        """The family a real GLIGEN of this phrase width is for (None: no known one)."""
        return _WIDTH_FAMILIES.get(self.phrase_width)

    def to(self, device: torch.device, dtype: torch.dtype) -> GligenWeights:
        """These tensors on ``device`` in ``dtype``."""

        def moved(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {k: v.to(device, dtype) for k, v in state.items()}

        fusers = {block: moved(state) for block, state in self.fusers.items()}
        return GligenWeights(
            self.layout, fusers, moved(self.position_net), self.phrase_width, self.object_width
        )


def parse(tensors: dict[str, torch.Tensor], name: str) -> GligenWeights:
    """The GLIGEN in a file's tensors (GligenFileError when they are not one)."""
    ldm: dict[str, dict[str, torch.Tensor]] = {}
    diffusers: dict[str, dict[str, torch.Tensor]] = {}
    position: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if POSITION in key and FUSER not in key:
            position[key[key.index(POSITION) + len(POSITION) :]] = value
            continue
        head, found, inner = key.partition(FUSER)
        if not found:
            continue
        block = _block_of(head + ".")
        if block is None:
            continue
        target = diffusers if block[1] else ldm
        target.setdefault(block[0] + head[head.index(block[0]) + len(block[0]) :], {})[inner] = value
    if ldm and diffusers:
        raise GligenFileError(f"'{name}' mixes the LDM and diffusers layouts of fuser layers")
    fusers, layout = (ldm, "ldm") if ldm else (diffusers, "diffusers")
    if not fusers or not position:
        raise GligenFileError(
            f"'{name}' is not a GLIGEN: it needs gated self-attention layers ('...transformer_blocks.N"
            ".fuser.*') and a position net ('position_net.*'), found "
            + ("no fuser layers" if not fusers else "no position net")
        )
    if "linears_text.0.weight" in position:
        raise GligenFileError(f"'{name}' is a text-image GLIGEN: only text-box GLIGENs are supported")
    needed = ("null_positive_feature", "null_position_feature", "linears.0.weight", "linears.4.weight")
    missing = [k for k in needed if k not in position]
    if missing:
        raise GligenFileError(f"'{name}': its position net lacks {', '.join(missing)}")
    for block, state in fusers.items():
        if "linear.weight" not in state or "alpha_attn" not in state:
            raise GligenFileError(f"'{name}': the fuser of {block} lacks linear.weight or alpha_attn")
    phrase_width = int(position["null_positive_feature"].shape[0])
    object_width = int(position["linears.4.weight"].shape[0])
    return GligenWeights(layout, fusers, position, phrase_width, object_width)


def _block_of(head: str) -> tuple[str, bool] | None:
    """(the transformer model's name in ``head``, True for diffusers' naming), or None."""
    match = _DIFFUSERS_BLOCK.search(head)
    if match:
        return match.group(1), True
    match = _LDM_BLOCK.search(head)
    return (match.group(1), False) if match else None


def load(path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> GligenWeights:
    """The GLIGEN in ``path``, its tensors on ``device`` in ``dtype``."""
    tensors, _ = weights.read_all(path, allow_pickle)
    return parse(tensors, path.name).to(device, dtype)


def probe(path: Path) -> GligenWeights | None:
    """The GLIGEN's widths and layout from a safetensors header (tensors left unread as meta), or None
    for a pickle."""
    if weights.is_pickle(path):
        return None
    header = weights.read_header(path)
    meta = {k: torch.empty(shape, device="meta") for k, shape in header.shapes().items()}
    return parse(meta, path.name)


def describe(path: Path) -> str:
    """'GLIGEN text-box, 16 gated layers, phrases 768 wide (SD 1.x)' from the safetensors header."""
    if weights.is_pickle(path):
        return "pickle (not inspected; loads only with allow_pickle)"
    try:
        found = probe(path)
    except (OSError, weights.WeightFileError, GligenFileError) as exc:
        return f"not a GLIGEN: {exc}"
    assert found is not None
    family = f" ({found.family})" if found.family else ""
    return f"GLIGEN text-box, {len(found.fusers)} gated layers, phrases {found.phrase_width} wide{family}"
