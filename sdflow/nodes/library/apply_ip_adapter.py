"""ApplyIPAdapter: prompt with a picture through an IP-Adapter, as a model patch."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models import clip_vision
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops import image_prompt
from sdflow.nodes.ops.schedule_window import window_precheck, window_problem
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image, Model
from sdflow.nodes.types_vision import ClipVision, ImagePrompt, IPAdapter

MAX_WEIGHT = 5.0


class ApplyIPAdapter(Node):
    """Steer the drawing with a picture: the UNet's cross-attention also attends to its image tokens.

    The negative side reads the tokens of no picture, as diffusers does for CFG: the projection of
    zero image embeds (plain), or of the hidden states of an all-zero input (plus). Several
    ApplyIPAdapter nodes chain; the model is left unchanged (copy-on-write)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="the model to patch; left unchanged")
    ip_adapter: IPAdapter = Field(description="from LoadIPAdapter")
    clip_vision: ClipVision = Field(description="the CLIP vision model the IP-Adapter was trained with")
    image: Image = Field(description="the picture to prompt with (a batch: the tokens of every picture)")
    weight: float = Field(1.0, ge=-1.0, le=MAX_WEIGHT, description="scale of the image attention (0 = none)")
    start_percent: float = Field(0.0, ge=0.0, le=1.0, description="fraction of the steps where it starts")
    end_percent: float = Field(1.0, ge=0.0, le=1.0, description="fraction of the steps where it ends")

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return window_precheck(constants)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        problem = window_problem(self.start_percent, self.end_percent)
        if problem:
            raise ctx.error(problem, "start_percent")
        if self.weight == 0:  # no adapter at all: the picture is exactly the unpatched one
            return {"model": self.model}
        adapter = self.ip_adapter.weights
        width = getattr(self.model.unet.config, "cross_attention_dim", None)
        if width is None:
            raise ctx.error(f"IP-Adapters fit SD 1.x/2.x and SDXL UNets, not {self.model.family}", "model")
        if adapter.cross_attention_dim != width:
            raise ctx.error(
                f"this IP-Adapter is for a UNet of cross-attention width {adapter.cross_attention_dim} but "
                f"the model's is {width} ({self.model.family}): load the IP-Adapter made for this family",
                "ip_adapter",
            )
        negative, positive = self._tokens(ctx)
        prompt = ImagePrompt(negative, positive, self.weight, self.start_percent, self.end_percent)
        try:
            return {"model": image_prompt.installed(self.model, adapter, prompt)}
        except image_prompt.LayerMismatch as exc:
            raise ctx.error(str(exc), "ip_adapter") from None

    def _tokens(self, ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(negative, positive) image tokens, each (1, pictures x tokens, width)."""
        adapter = self.ip_adapter.weights
        vision = self.clip_vision
        inputs = vision.preprocess(self.image.pixels)
        encoded = clip_vision.encode(vision.model, inputs)
        if adapter.reads == "penultimate":
            cond = encoded.penultimate
            uncond = clip_vision.encode(vision.model, torch.zeros_like(inputs)).penultimate
        else:
            cond = encoded.image_embeds
            uncond = torch.zeros_like(cond)
        expected = adapter.projection_input_width
        if cond.shape[-1] != expected:
            raise ctx.error(
                f"this IP-Adapter reads CLIP vision features {expected} wide but this CLIP vision model "
                f"gives {cond.shape[-1]}: load the image encoder the IP-Adapter was trained with",
                "clip_vision",
            )
        parameter = next(adapter.projection.parameters())
        with torch.inference_mode():
            tokens = [adapter.projection(x.to(parameter.device, parameter.dtype)) for x in (uncond, cond)]
        return tuple(t.reshape(1, -1, t.shape[-1]) for t in tokens)  # type: ignore[return-value]
