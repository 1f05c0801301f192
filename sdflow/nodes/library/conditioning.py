"""ConditioningConcat and ConditioningAverage: combine two conditionings (as ComfyUI's nodes do)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Conditioning


def _checked_pair(first: Conditioning, second: Conditioning, ctx: RunContext) -> None:
    """Refuse conditionings of different widths or families, or batches that do not broadcast."""
    if first.embeds.shape[-1] != second.embeds.shape[-1] or first.family != second.family:
        raise ctx.error(
            f"'first' is {first.family} conditioning {first.embeds.shape[-1]} wide but 'second' is "
            f"{second.family}, {second.embeds.shape[-1]} wide: encode both with the same checkpoint",
            "second",
        )
    batches = {first.embeds.shape[0], second.embeds.shape[0]}
    if len(batches) > 1 and 1 not in batches:
        sizes = " and ".join(map(str, sorted(batches)))
        raise ctx.error(f"batches of {sizes} prompts do not match (one of them may be 1)", "second")


def _broadcast(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch = max(a.shape[0], b.shape[0])
    return a.expand(batch, *a.shape[1:]), b.expand(batch, *b.shape[1:])


class ConditioningConcat(Node):
    """Join two conditionings along the tokens: the UNet attends to both prompts at once."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}

    first: Conditioning = Field(description="tokens that come first (its pooled output is kept)")
    second: Conditioning = Field(description="tokens appended after the first's")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _checked_pair(self.first, self.second, ctx)
        first, second = _broadcast(self.first.embeds, self.second.embeds.to(self.first.embeds))
        pooled = self.first.pooled
        if pooled is not None and pooled.shape[0] != first.shape[0]:
            pooled = pooled.expand(first.shape[0], -1)
        empty = self.first.empty if self.first.empty is not None else self.second.empty
        joined = replace(self.first, embeds=torch.cat([first, second], dim=1), pooled=pooled, empty=empty)
        return {"conditioning": joined}


class ConditioningAverage(Node):
    """Blend two conditionings: weight × first + (1 − weight) × second (shorter one padded)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"conditioning": Conditioning}

    first: Conditioning = Field(description="the conditioning that `weight` measures")
    second: Conditioning = Field(description="the other conditioning")
    weight: float = Field(
        0.5, ge=0.0, le=1.0, description="share of `first`: 1 = only first, 0 = only second"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        _checked_pair(self.first, self.second, ctx)
        tokens = max(self.first.tokens, self.second.tokens)
        empty = self.first.empty if self.first.empty is not None else self.second.empty
        try:
            first, second = self.first.padded_to(tokens, empty), self.second.padded_to(tokens, empty)
        except ValueError as exc:
            raise ctx.error(str(exc), "second") from None
        a, b = _broadcast(first.embeds, second.embeds.to(first.embeds))
        pooled = first.pooled
        if first.pooled is not None and second.pooled is not None:
            pa, pb = _broadcast(first.pooled, second.pooled.to(first.pooled))
            pooled = self.weight * pa + (1 - self.weight) * pb
        blended = replace(first, embeds=self.weight * a + (1 - self.weight) * b, pooled=pooled)
        return {"conditioning": blended}
