"""One text encoder's view of a parsed prompt: its chunks encoded, weighted and concatenated.

SDXL runs this once per encoder (with that encoder's tokenizer, layer choice and embedding vectors)
and joins the results along the feature axis; SD 1.x and 2.x run it once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from sdflow.prompts import weighting
from sdflow.prompts.chunks import CHUNK, Chunk, Vectors, split
from sdflow.prompts.parse import Piece


@dataclass(frozen=True)
class Layer:
    """Which hidden states become the conditioning: ``skip`` final layers skipped (0 = the last),
    passed through the final layer norm when ``normalize`` (SD 1.x's clip skip) or raw (SDXL)."""

    skip: int = 0
    normalize: bool = True


@dataclass(frozen=True)
class Encoded:
    """A prompt through one encoder: states (1, 77 * chunks, dim), the pooled output of its first
    chunk (1, dim) when the encoder has one, and the empty prompt's states (1, 77, dim)."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None
    empty: torch.Tensor
    chunks: int


def encode(
    tokenizer,
    text_encoder: torch.nn.Module,
    pieces: list[Piece],
    layer: Layer = Layer(),
    method: str = "comfy",
    vectors: Vectors | None = None,
    max_chunks: int | None = None,
) -> Encoded:
    """Encode ``pieces`` chunk by chunk (each wrapped in start/end tokens and padded to 77), weight
    them by ``method`` and concatenate along the tokens. ``max_chunks`` keeps only the first ones.
    With one unweighted chunk and no embeddings this is exactly the plain tokenizer-and-encoder path."""
    chunks = split(pieces, tokenizer, vectors or _no_vectors)
    if max_chunks is not None:
        chunks = chunks[:max_chunks]
    ids = torch.stack([_wrapped(tokenizer, c) for c in chunks]).to(text_encoder.device)
    with torch.inference_mode():
        with _vectors_inserted(text_encoder, chunks):
            hidden, pooled = _forward(text_encoder, ids, layer)
        empty, _ = _forward(text_encoder, _wrapped(tokenizer, Chunk())[None].to(text_encoder.device), layer)
        weights = torch.stack([_position_weights(c) for c in chunks]).to(hidden.device)
        # Weighted in float32 (fp16 states would round the small differences from the empty prompt);
        # unweighted states come back unchanged, and fp16 -> fp32 -> fp16 is exact.
        hidden = weighting.apply(method, hidden.float(), weights, empty.float())
    dtype = text_encoder.dtype
    hidden = hidden.reshape(1, -1, hidden.shape[-1]).to(dtype)
    pooled = pooled[:1].to(dtype) if pooled is not None else None
    return Encoded(hidden, pooled, empty.to(dtype), len(chunks))


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


def _forward(text_encoder: torch.nn.Module, ids: torch.Tensor, layer: Layer):
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
    pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        pooled = getattr(out, "pooler_output", None)
    return hidden, pooled


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
