"""Model merging as ComfyUI does it: ModelMergeSimple, ModelMergeBlocks, ModelMergeSD1, ModelMergeSDXL,
ModelMergeAdd and ModelMergeSubtract.

Every UNet weight becomes ``own * model1 + other * model2``. The block nodes pick ``own`` (the share of
model1) by the weight's name in the original (LDM) layout, the longest matching block prefix winning,
exactly as ComfyUI's ModelMergeBlocks; a weight under no named block takes the first block's ratio.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import Field, create_model

from sdflow.models.ldm_keys import unet_mapping
from sdflow.models.merge import Factors, MergeMismatch, merged_copy
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Model

RATIO = {"ge": 0.0, "le": 1.0}
MULTIPLIER = {"ge": -10.0, "le": 10.0}


class _Merge(Node):
    """Two models of one architecture in, one merged model out (model1's scheduler and family)."""

    abstract: ClassVar[bool] = True
    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    family_from: ClassVar[dict[str, str]] = {"model": "model1"}
    same_family: ClassVar[tuple[str, ...]] = ("model1", "model2")

    model1: Model = Field(description="the first model (its scheduler config is kept); left unchanged")
    model2: Model = Field(description="the second model, of the same architecture; left unchanged")

    def factors(self) -> Factors:
        raise NotImplementedError

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            unet = merged_copy(self.model1.unet, self.model2.unet, self.factors())
        except MergeMismatch as exc:
            raise ctx.error(str(exc), "model2") from None
        return {"model": replace(self.model1, unet=unet)}


class ModelMergeSimple(_Merge):
    """Blend two models: ratio × model1 + (1 − ratio) × model2, weight by weight."""

    ratio: float = Field(1.0, **RATIO, description="share of model1: 1 = model1 alone, 0 = model2 alone")

    def factors(self) -> Factors:
        return lambda name: (self.ratio, 1.0 - self.ratio)


class ModelMergeAdd(_Merge):
    """Add model2's weights to model1's (as ComfyUI's ModelMergeAdd: usually model2 is a difference)."""

    def factors(self) -> Factors:
        return lambda name: (1.0, 1.0)


class ModelMergeSubtract(_Merge):
    """The difference of two models: multiplier × (model1 − model2), e.g. to add to a third later."""

    multiplier: float = Field(1.0, **MULTIPLIER, description="scale of the difference")

    def factors(self) -> Factors:
        return lambda name: (self.multiplier, -self.multiplier)


class _BlockMerge(_Merge):
    """A ratio per UNet block; ``blocks`` maps each ratio field to its LDM key prefix."""

    abstract: ClassVar[bool] = True
    blocks: ClassVar[dict[str, str]] = {}

    def factors(self) -> Factors:
        names = unet_mapping(dict(self.model1.unet.config), "")
        ratios = {prefix: getattr(self, field) for field, prefix in self.blocks.items()}
        default = next(iter(ratios.values()))

        def factor(name: str) -> tuple[float, float]:
            source = names(name)
            key = source.key if source is not None else name
            matching = [prefix for prefix in ratios if key.startswith(prefix)]
            ratio = ratios[max(matching, key=len)] if matching else default
            return ratio, 1.0 - ratio

        return factor


class ModelMergeBlocks(_BlockMerge):
    """Blend two models with one ratio (share of model1) for the input, middle and output blocks."""

    blocks: ClassVar[dict[str, str]] = {"input": "input", "middle": "middle", "out": "out"}

    input: float = Field(1.0, **RATIO, description="share of model1 in the input (down) blocks")
    middle: float = Field(1.0, **RATIO, description="share of model1 in the middle block")
    out: float = Field(1.0, **RATIO, description="share of model1 in the output (up) blocks and out layers")


def _block_fields(inputs: int, outputs: int) -> dict[str, str]:
    """Field name -> LDM prefix for ComfyUI's per-block merge nodes (``input_blocks.3`` -> input_blocks_3)."""
    names = ["time_embed.", "label_emb."]
    names += [f"input_blocks.{i}" for i in range(inputs)] + [f"middle_block.{i}" for i in range(3)]
    names += [f"output_blocks.{i}" for i in range(outputs)] + ["out."]
    return {name.rstrip(".").replace(".", "_"): name for name in names}


def _per_block_node(name: str, inputs: int, outputs: int, doc: str) -> type[Node]:
    blocks = _block_fields(inputs, outputs)
    fields: dict[str, Any] = {
        field: (float, Field(1.0, **RATIO, description=f"share of model1 in {prefix.rstrip('.')}"))
        for field, prefix in blocks.items()
    }
    cls = create_model(name, __base__=_BlockMerge, __module__=__name__, __doc__=doc, **fields)
    cls.blocks = blocks
    return cls


ModelMergeSD1 = _per_block_node(
    "ModelMergeSD1", 12, 12, "Blend two SD 1.x/2.x models with a ratio (share of model1) per UNet block."
)
ModelMergeSDXL = _per_block_node(
    "ModelMergeSDXL", 9, 9, "Blend two SDXL models with a ratio (share of model1) per UNet block."
)
