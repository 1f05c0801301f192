"""One text encoder's view of a parsed prompt: its chunks encoded, weighted and concatenated.

SDXL runs this once per encoder (with that encoder's tokenizer, layer choice and embedding vectors)
and joins the results along the feature axis; SD 1.x and 2.x run it once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from sdflow.prompts import weighting
from sdflow.prompts.chunks import CHUNK, Chunk, Vectors, split
from sdflow.prompts.padding import pad_tokens
from sdflow.prompts.parse import Piece


@dataclass(frozen=True)
class Layer:
    """Which hidden states become the conditioning: ``skip`` final layers skipped (0 = the last),
    passed through the final layer norm when ``normalize`` (SD 1.x's clip skip) or raw (SDXL)."""

    skip: int = 0
    normalize: bool = True

    @classmethod
    def of(cls, penultimate: bool, clip_skip: int) -> Layer:
        """SD 1.x/2.x read the last layer (``clip_skip`` earlier, through the final norm); SDXL reads
        the raw penultimate layer (``clip_skip`` earlier still)."""
        return cls(clip_skip + 1, normalize=False) if penultimate else cls(clip_skip, normalize=True)


@dataclass(frozen=True)
class Encoded:
    """Prompts through the encoder(s): states (batch, 77 * chunks, dim), the pooled output of each
    prompt's first chunk (batch, dim) when an encoder projects one (SDXL's), and the empty prompt's
    states (1, 77, dim) when the prompt is long, weighted or empty (see ``_empty_states``)."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None
    empty: torch.Tensor | None
    chunks: int


def encode(
    tokenizer,
    text_encoder: torch.nn.Module,
    pieces: list[Piece],
    layer: Layer = Layer(),
    method: str = "comfy",
    vectors: Vectors | None = None,
    max_chunks: int | None = None,
    pooler: bool = False,
) -> Encoded:
    """Encode ``pieces`` chunk by chunk (each wrapped in start/end tokens and padded to 77), weight
    them by ``method`` and concatenate along the tokens. ``max_chunks`` keeps only the first ones.
    With one unweighted chunk and no embeddings this is exactly the plain tokenizer-and-encoder path.
    The pooled embedding is a projecting encoder's text_embeds, else (``pooler``: Flux's CLIP-L) the
    pooler output."""
    chunks = split(pieces, tokenizer, vectors or _no_vectors)
    if max_chunks is not None:
        chunks = chunks[:max_chunks]
    ids = torch.stack([_wrapped(tokenizer, c) for c in chunks]).to(text_encoder.device)
    with torch.inference_mode():
        with _vectors_inserted(text_encoder, chunks):
            hidden, pooled = _forward(text_encoder, ids, layer, pooler)
        empty = _empty_states(tokenizer, text_encoder, layer, chunks, method, hidden)
        weights = torch.stack([_position_weights(c) for c in chunks]).to(hidden.device)
        # Weighted in float32 (fp16 states would round the small differences from the empty prompt);
        # unweighted states come back unchanged, and fp16 -> fp32 -> fp16 is exact.
        reference = empty.float() if empty is not None else None
        hidden = weighting.apply(method, hidden.float(), weights, reference)
    dtype = text_encoder.dtype
    hidden = hidden.reshape(1, -1, hidden.shape[-1]).to(dtype)
    pooled = pooled[:1].to(dtype) if pooled is not None else None
    return Encoded(hidden, pooled, empty.to(dtype) if empty is not None else None, len(chunks))


def _empty_states(
    tokenizer,
    text_encoder: torch.nn.Module,
    layer: Layer,
    chunks: list[Chunk],
    method: str,
    hidden: torch.Tensor,
) -> torch.Tensor | None:
    """The empty prompt's states (1, 77, dim) where they are needed: to weight (comfy) and to pad
    other conditioning to a long prompt. The empty prompt's own states are themselves (no second
    forward); a plain one-chunk prompt gets None (a shorter conditioning never pads to it)."""
    if len(chunks) == 1 and not chunks[0].ids:
        return hidden
    weighted = method == "comfy" and any(c.weighted for c in chunks)
    if len(chunks) == 1 and not weighted:
        return None
    ids = _wrapped(tokenizer, Chunk())[None].to(text_encoder.device)
    return _forward(text_encoder, ids, layer)[0]


def encode_prompts(
    pairs: list[tuple[Any, torch.nn.Module]],
    prompts: list[list[Piece]],
    layer: Layer,
    method: str,
    vectors_for: Callable[[int, str], Vectors],
    max_chunks: int | None = None,
) -> Encoded:
    """Each prompt through every (tokenizer, encoder) pair: states joined along the features (SDXL's
    two encoders), prompts stacked as a batch padded with empty-prompt chunks to the longest, the
    pooled embedding of the last projecting encoder. ``vectors_for(width, role)`` gives each encoder
    its embedding vectors."""
    rows = []
    for pieces in prompts:
        parts = []
        for tokenizer, encoder in pairs:
            vectors = vectors_for(*embedding_slot(encoder))
            parts.append(encode(tokenizer, encoder, pieces, layer, method, vectors, max_chunks))
        pooled = [p.pooled for p in parts if p.pooled is not None]
        empties = [p.empty for p in parts]
        rows.append(
            Encoded(
                torch.cat([p.hidden for p in parts], dim=-1),
                pooled[-1] if pooled else None,
                torch.cat(empties, dim=-1) if all(e is not None for e in empties) else None,
                parts[0].chunks,
            )
        )
    tokens = max(r.hidden.shape[1] for r in rows)
    empty = next((r.empty for r in rows if r.empty is not None), None)
    hidden = torch.cat([pad_tokens(r.hidden, empty, tokens) for r in rows])
    pooled = torch.cat([r.pooled for r in rows]) if rows[0].pooled is not None else None
    return Encoded(hidden, pooled, empty, max(r.chunks for r in rows))


def embedding_slot(encoder: torch.nn.Module) -> tuple[int, str]:
    """The encoder's token vector width and its role in embedding files: SDXL's projecting OpenCLIP
    encoder reads ``clip_g``, every other CLIP ``clip_l`` (as ComfyUI reads them)."""
    role = "clip_g" if getattr(encoder, "text_projection", None) is not None else "clip_l"
    return encoder.get_input_embeddings().embedding_dim, role


def _no_vectors(name: str) -> torch.Tensor:
    raise LookupError(f"no embeddings are available here (asked for '{name}')")


def _wrapped(tokenizer, chunk: Chunk) -> torch.Tensor:
    """start + ids + end, padded with the tokenizer's pad token to 77 (as the tokenizer pads)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id, *chunk.ids, tokenizer.eos_token_id]
    return torch.tensor(ids + [pad] * (CHUNK + 2 - len(ids)))


def _position_weights(chunk: Chunk) -> torch.Tensor:
    """A weight per position of the wrapped chunk: 1 for start, end and padding."""
    weights = [1.0, *chunk.weights] + [1.0] * (CHUNK + 1 - len(chunk.weights))
    return torch.tensor(weights)


def _forward(text_encoder: torch.nn.Module, ids: torch.Tensor, layer: Layer, pooler: bool = False):
    """(states, pooled or None) of ``ids`` at ``layer``."""
    if layer.skip == 0:
        out = text_encoder(ids)
        hidden = out[0]
    else:
        out = text_encoder(ids, output_hidden_states=True)
        hidden = out.hidden_states[-(layer.skip + 1)]
        if layer.normalize:
            # transformers 5 dropped the `text_model` wrapper; older releases still have it.
            hidden = getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    pooled = getattr(out, "text_embeds", None)  # a projecting encoder's pooled embedding
    return hidden, pooled if pooled is not None or not pooler else out.pooler_output


@contextmanager
def _vectors_inserted(text_encoder: torch.nn.Module, chunks: list[Chunk]) -> Iterator[None]:
    """While inside, the token embedding table's output carries the chunks' embedding vectors at
    their positions (a forward hook, removed on exit: the cached encoder is left as it was)."""
    if not any(c.vectors for c in chunks):
        yield
        return

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for row, chunk in enumerate(chunks):
            for index, vector in chunk.vectors.items():
                output[row, index + 1] = vector.to(output.device, output.dtype)  # +1: the start token
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
