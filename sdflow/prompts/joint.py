"""Text conditioning of the diffusion transformer families (SD3, Flux), as their diffusers pipelines
build it, following the family's ``JointText`` recipe.

SD3: the CLIP-L and CLIP-G penultimate hidden states (raw, one 77-token chunk each) joined along the
features, zero-padded to T5's width and followed by T5's tokens; pooled = both CLIP projections
concatenated. Flux: T5's tokens alone; pooled = CLIP-L's pooler output. The CLIP parts read the prompt
syntax (weights, embeddings) as CLIPEncode does for SD 1.x; T5 reads the prompt's plain text (weights
and BREAK left out), padded to ``t5_length`` tokens as diffusers pads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sdflow.models.families import JointText
from sdflow.prompts.chunks import Vectors
from sdflow.prompts.encode import Encoded, Layer, embedding_slot, encode, encode_prompts
from sdflow.prompts.parse import Piece, Text


def plain_text(pieces: list[Piece]) -> str:
    """The prompt's words without weights, BREAKs or embeddings (what T5 reads)."""
    return "".join(piece.text for piece in pieces if isinstance(piece, Text))


def encode_t5(tokenizer: Any, encoder: torch.nn.Module, text: str, length: int) -> torch.Tensor:
    """T5's last hidden states (1, length, width) of ``text``, padded and truncated to ``length``."""
    ids = tokenizer(
        [text],
        padding="max_length",
        max_length=length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    ).input_ids
    with torch.inference_mode():
        return encoder(ids.to(encoder.device))[0]


def encode_joint(
    pairs: list[tuple[Any, torch.nn.Module]],
    recipe: JointText,
    prompts: list[list[Piece]],
    clip_skip: int,
    method: str,
    vectors_for: Callable[[int, str], Vectors],
    t5_texts: list[str] | None = None,
    t5_length: int | None = None,
    clip_g_prompts: list[list[Piece]] | None = None,
) -> Encoded:
    """Each prompt as ``recipe`` builds it, stacked as a batch (every row is as long: one CLIP chunk
    and ``t5_length`` T5 tokens). ``t5_texts`` (one per prompt) replace what T5 reads, and
    ``clip_g_prompts`` what the recipe's CLIP-G reads."""
    length = t5_length or recipe.t5_length
    layer = Layer.of(True, clip_skip)
    rows, pooled_rows = [], []
    for row, pieces in enumerate(prompts):
        clip: dict[int, Encoded] = {}
        for index in sorted({*recipe.sequence, *recipe.pooled}):
            tokenizer, encoder = pairs[index]
            vectors = vectors_for(*embedding_slot(encoder))
            read = clip_g_prompts[row] if clip_g_prompts and index == recipe.clip_g else pieces
            clip[index] = encode(tokenizer, encoder, read, layer, method, vectors, 1, pooler=True)
        t5_tokenizer, t5 = pairs[recipe.t5]
        text = t5_texts[row] if t5_texts else plain_text(pieces)
        states = encode_t5(t5_tokenizer, t5, text, length)
        if recipe.sequence:
            joined = torch.cat([clip[i].hidden.to(states.dtype) for i in recipe.sequence], dim=-1)
            joined = F.pad(joined, (0, states.shape[-1] - joined.shape[-1]))
            states = torch.cat([joined, states], dim=-2)
        rows.append(states)
        pooled_rows.append(torch.cat([clip[i].pooled for i in recipe.pooled], dim=-1))
    return Encoded(torch.cat(rows), torch.cat(pooled_rows), None, 1)


def encode_family(
    family: Any,
    pairs: list[tuple[Any, torch.nn.Module]],
    prompts: list[list[Piece]],
    clip_skip: int,
    method: str,
    vectors_for: Callable[[int, str], Vectors],
    max_chunks: int | None = None,
    t5_texts: list[str] | None = None,
    t5_length: int | None = None,
    clip_g_prompts: list[list[Piece]] | None = None,
) -> Encoded:
    """The conditioning of ``prompts`` as ``family`` reads it: its JointText recipe (SD3, Flux), else
    every CLIP encoder joined along the features (SD 1.x/2.x, SDXL: ``encode_prompts``)."""
    recipe = getattr(family, "text", None)
    if recipe is None:
        layer = Layer.of(family.penultimate, clip_skip)
        return encode_prompts(pairs, prompts, layer, method, vectors_for, max_chunks)
    return encode_joint(
        pairs, recipe, prompts, clip_skip, method, vectors_for, t5_texts, t5_length, clip_g_prompts
    )
