"""CLIPEncode: prompt text to conditioning."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Clip, Conditioning


class CLIPEncode(Node):
    """Encode a prompt with CLIP into conditioning for the UNet."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}

    clip: Clip = Field(description="tokenizer and text encoder, from LoadCheckpoint")
    text: str = Field("", description="the prompt; longer than 77 tokens is truncated")
    clip_skip: int = Field(
        0,
        ge=0,
        le=24,
        description="final layers to skip: 0 = last layer, 1 = penultimate (A1111 'clip skip 2')",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        tokenizer, encoder = self.clip.tokenizer, self.clip.text_encoder
        layers = encoder.config.num_hidden_layers
        if self.clip_skip >= layers:
            raise ctx.error(
                f"clip_skip {self.clip_skip} is too large: this text encoder has {layers} layers "
                f"(at most {layers - 1})",
                "clip_skip",
            )
        ids = tokenizer(
            self.text,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(encoder.device)
        with torch.inference_mode():
            if self.clip_skip == 0:
                embeds = encoder(ids)[0]
            else:
                hidden = encoder(ids, output_hidden_states=True).hidden_states
                # transformers 5 dropped the `text_model` wrapper; older releases still have it.
                final_norm = getattr(encoder, "text_model", encoder).final_layer_norm
                embeds = final_norm(hidden[-(self.clip_skip + 1)])
        return {"conditioning": Conditioning(embeds.to(encoder.dtype))}
