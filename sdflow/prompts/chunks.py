"""Parsed prompt pieces as 75-token chunks of (token id, weight), each later wrapped in start/end.

Splitting follows A1111: a chunk holds 75 tokens; when it is full and a comma came within its last
20 tokens, the chunk ends after the comma and the words after it move to the next chunk; ``BREAK``
ends the chunk; an embedding's vectors move whole to the next chunk when they do not fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sdflow.prompts.parse import Break, Embedding, Piece, Text

CHUNK = 75  # tokens of a chunk, without its start and end tokens
COMMA_BACKTRACK = 20  # a full chunk ends after a comma this close to its end


class PromptError(ValueError):
    """A prompt that cannot be encoded (a missing or unfit embedding...); the message says why."""


@dataclass
class Chunk:
    """Up to 75 tokens: ids, their weights, and embedding vectors standing in for some of them."""

    ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # index in ids -> vector

    def append(self, token: int, weight: float) -> None:
        self.ids.append(token)
        self.weights.append(weight)

    def cut(self, index: int) -> Chunk:
        """Remove the tokens from ``index`` on and return them as a new chunk."""
        rest = Chunk(self.ids[index:], self.weights[index:])
        rest.vectors = {i - index: v for i, v in self.vectors.items() if i >= index}
        del self.ids[index:], self.weights[index:]
        self.vectors = {i: v for i, v in self.vectors.items() if i < index}
        return rest

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for w in self.weights)


Vectors = Callable[[str], torch.Tensor]  # embedding name -> (n, width) vectors for this encoder


def text_ids(tokenizer, text: str) -> list[int]:
    """The token ids of ``text`` without start and end tokens (and without truncation)."""
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False).input_ids


def split(pieces: list[Piece], tokenizer, vectors: Vectors, size: int = CHUNK) -> list[Chunk]:
    """The pieces as chunks of at most ``size`` tokens (at least one chunk, maybe empty)."""
    comma = tokenizer.get_vocab().get(",</w>")
    placeholder = tokenizer.bos_token_id  # an id that is never the end token (pooling looks for it)
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for piece in pieces:
        if isinstance(piece, Break):
            close()
        elif isinstance(piece, Text):
            for token in text_ids(tokenizer, piece.text):
                if token == comma:
                    last_comma = len(current.ids)
                elif len(current.ids) == size and last_comma != -1 and size - last_comma <= COMMA_BACKTRACK:
                    rest = current.cut(last_comma + 1)
                    close()
                    current = rest
                if len(current.ids) == size:
                    close()
                current.append(token, piece.weight)
        elif isinstance(piece, Embedding):
            rows = vectors(piece.name)
            if len(current.ids) + len(rows) > size and len(rows) <= size:
                close()
            for row in rows:
                if len(current.ids) == size:
                    close()
                current.vectors[len(current.ids)] = row
                current.append(placeholder, piece.weight)
    if current.ids or not chunks:
        close()
    return chunks


def overflow(pieces: list[Piece], tokenizer, vectors: Vectors) -> str | None:
    """What keeping only the first chunk drops, said for a warning (None when nothing is dropped)."""
    chunks = split(pieces, tokenizer, vectors)
    dropped = sum(len(chunk.ids) for chunk in chunks[1:])
    if not dropped:
        return None
    words = [t for c in chunks[1:] for i, t in enumerate(c.ids) if i not in c.vectors]
    vectors_dropped = sum(len(c.vectors) for c in chunks[1:])
    what = f"'{tokenizer.decode(words).strip()}'"
    if vectors_dropped:
        what += f" and {vectors_dropped} embedding vectors"
    return f"kept the first {len(chunks[0].ids)} tokens (at most {CHUNK}), dropped {dropped}: {what}"
