"""CLIPEncode: prompt text (weights, BREAK, long prompts, embeddings) to conditioning."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Clip, Conditioning
from sdflow.prompts import embeddings
from sdflow.prompts.chunks import CHUNK, PromptError, split
from sdflow.prompts.encode import Encoded, Layer, encode
from sdflow.prompts.parse import parse
from sdflow.prompts.weighting import Weighting


class CLIPEncode(Node):
    """Encode a prompt (weights, BREAK, embeddings, any length) with CLIP into conditioning."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}

    clip: Clip = Field(description="tokenizer and text encoder, from LoadCheckpoint")
    text: str | list[str] = Field(
        "",
        description="the prompt: (word:1.3), (word), [word], BREAK, embedding:NAME; a list makes a batch",
    )
    clip_skip: int = Field(
        0,
        ge=0,
        le=24,
        description="final layers to skip: 0 = last layer, 1 = penultimate (A1111 'clip skip 2')",
    )
    weighting: Weighting = Field(
        "comfy",
        description="comfy: move weighted tokens from the empty prompt's; a1111: scale, keep the mean",
    )
    truncate: bool = Field(
        False, description="keep only the first 75 tokens (a warning tells what is dropped)"
    )
    allow_pickle: bool = Field(
        False, description="load pickled embeddings (.pt, .bin): only for files you trust"
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        return embeddings.fingerprint("\n".join(_prompts(constants.get("text", ""))))

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        text = "\n".join(_prompts(constants.get("text", "")))
        return [("text", p) for p in embeddings.check(text, bool(constants.get("allow_pickle")))]

    def run(self, ctx: RunContext) -> dict[str, Any]:
        tokenizer, encoder = self.clip.tokenizer, self.clip.text_encoder
        layers = encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ctx.error(
                f"clip_skip {self.clip_skip} is too large: this text encoder has {layers} layers "
                f"(at most {layers - 1})",
                "clip_skip",
            )
        library = embeddings.Library(self.allow_pickle)
        vectors = library.vectors_for(encoder.get_input_embeddings().embedding_dim)
        encoded = []
        try:
            for prompt in _prompts(self.text):
                pieces = parse(prompt)
                if self.truncate:
                    _warn_dropped(ctx, split(pieces, tokenizer, vectors), tokenizer)
                layer = Layer(self.clip_skip, normalize=True)
                max_chunks = 1 if self.truncate else None
                encoded.append(encode(tokenizer, encoder, pieces, layer, self.weighting, vectors, max_chunks))
        except PromptError as exc:
            raise ctx.error(str(exc), "text") from None
        return {"conditioning": batched(encoded, self.clip.family)}


def _prompts(text: str | list[str]) -> list[str]:
    return [text] if isinstance(text, str) else list(text) or [""]


def _warn_dropped(ctx: RunContext, chunks: list, tokenizer) -> None:
    """With ``truncate``, say which text the 75-token cut drops (never drop it silently)."""
    dropped = [i for c in chunks[1:] for i in c.ids]
    if dropped:
        words = tokenizer.decode(dropped).strip()
        ctx.warn(
            f"truncate: kept the first {len(chunks[0].ids)} tokens (at most {CHUNK}), "
            f"dropped {len(dropped)}: '{words}'",
            "text",
        )


def batched(encoded: list[Encoded], family) -> Conditioning:
    """One conditioning for a batch of prompts, shorter ones padded with empty-prompt chunks."""
    longest = max(e.hidden.shape[1] for e in encoded)
    empty = encoded[0].empty
    rows = [Conditioning(e.hidden, family, empty=e.empty).padded_to(longest).embeds for e in encoded]
    pooled = [e.pooled for e in encoded]
    return Conditioning(
        torch.cat(rows),
        family,
        pooled=torch.cat(pooled) if all(p is not None for p in pooled) else None,
        empty=empty,
    )
