"""Prompt text as A1111 and ComfyUI users write it, parsed into weighted pieces.

Syntax: ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1,
``(text:1.3)`` multiplies it by 1.3; groups nest (weights multiply). ``\\(``, ``\\)``, ``\\[``, ``\\]``
and ``\\\\`` are the literal characters. A group never closed weighs from where it opens to the end
(as A1111); a closing bracket with nothing open is literal text. The word ``BREAK`` (capitals) starts
a new 75-token chunk. ``embedding:NAME`` inserts a textual-inversion embedding's vectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UP = 1.1  # the weight of one pair of round brackets, and the divisor of square ones


@dataclass(frozen=True)
class Text:
    """Plain prompt text with the weight its brackets give it."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Embedding:
    """``embedding:NAME``: the vectors of a textual-inversion embedding file, weighted."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Break:
    """``BREAK``: pad the current chunk and start a new one."""


Piece = Text | Embedding | Break

_TOKENS = re.compile(
    r"""
      \\[()\[\]\\]                                  # an escaped bracket or backslash
    | \( | \[                                       # a group opens
    | :\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)       # ':1.3)' closes a round group with its weight
    | \) | \]                                       # a group closes
    | [^\\()\[\]:]+                                 # text
    | : | \\                                        # a lone colon or backslash is text
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_EMBEDDING = re.compile(r"embedding:([^\s,()\[\]\\:]+)")


def parse(text: str) -> list[Piece]:
    """``text`` as weighted text, embedding and BREAK pieces, in order (adjacent text of one weight
    merged). Plain text with no brackets, escapes, BREAK or embeddings comes back unchanged as one
    piece of weight 1."""
    pieces: list[list] = []  # [text, weight], weights multiplied in place as groups close
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), UP)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / UP)
        else:
            pieces.append([token, 1.0])
    for start in round_open:
        multiply(start, UP)
    for start in square_open:
        multiply(start, 1 / UP)
    return _split_special(_merged(pieces))


def _merged(pieces: list[list]) -> list[tuple[str, float]]:
    merged: list[tuple[str, float]] = []
    for text, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        else:
            merged.append((text, weight))
    return merged or [("", 1.0)]


def _split_special(merged: list[tuple[str, float]]) -> list[Piece]:
    """Text pieces with BREAK and ``embedding:NAME`` taken out as pieces of their own."""
    result: list[Piece] = []
    for text, weight in merged:
        for index, part in enumerate(_BREAK.split(text)):
            if index > 0:
                result.append(Break())
            position = 0
            for found in _EMBEDDING.finditer(part):
                if found.start() > position:
                    result.append(Text(part[position : found.start()], weight))
                name = found.group(1).rstrip(".")
                result.append(Embedding(name, weight))
                position = found.start() + len("embedding:") + len(name)
            if position < len(part):
                result.append(Text(part[position:], weight))
    return result or [Text("")]


def embedding_names(text: str) -> list[str]:
    """The embedding names ``text`` refers to, in order, without repeats."""
    names: list[str] = []
    for piece in parse(text):
        if isinstance(piece, Embedding) and piece.name not in names:
            names.append(piece.name)
    return names


def is_plain(pieces: list[Piece]) -> bool:
    """True when nothing in the pieces is weighted, an embedding or a BREAK."""
    return all(isinstance(p, Text) and p.weight == 1.0 for p in pieces)
