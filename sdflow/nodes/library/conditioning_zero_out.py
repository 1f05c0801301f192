"""ConditioningZeroOut: the same conditioning with every embedding set to zero (ComfyUI's node)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning


class ConditioningZeroOut(Node):
    """Zero the token embeddings (and the pooled one): a true 'nothing' prompt, as SDXL Turbo
    workflows use for the negative."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}
    family_from: ClassVar[dict[str, str]] = {"conditioning": "conditioning"}

    conditioning: Conditioning = Field(description="the conditioning to zero (its size settings are kept)")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        given = self.conditioning
        pooled = None if given.pooled is None else torch.zeros_like(given.pooled)
        empty = None if given.empty is None else torch.zeros_like(given.empty)
        return {
            "conditioning": replace(given, embeds=torch.zeros_like(given.embeds), pooled=pooled, empty=empty)
        }
