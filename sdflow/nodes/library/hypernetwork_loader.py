"""HypernetworkLoader: an A1111 hypernetwork's MLPs shifting the UNet's attention key/value inputs."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models import hypernetwork, weights
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types import Model

MAX_STRENGTH = 10.0  # ComfyUI's bounds


class HypernetworkLoader(ModelFileNode):
    """Apply an A1111 hypernetwork to a model's attention layers (ComfyUI's HypernetworkLoader).

    Every attention layer (self and cross) whose input width the hypernetwork covers reads its key
    and value inputs as ``x + mlp(x) * strength`` (A1111 .pt files, or .safetensors; see
    docs/models.md). The model given is left unchanged."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "hypernetworks"
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="the model to patch; left unchanged")
    file: str = Field(
        min_length=1,
        description=(
            "the hypernetwork (ComfyUI's hypernetwork_name): a path, or a name in the model folders' "
            "hypernetworks folders; .pt files are pickles and need allow_pickle"
        ),
    )
    strength: float = Field(
        1.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, description="scale of the shift (0 = none)"
    )
    allow_pickle: bool = Field(
        False, description="read a pickle (.pt) file, with torch.load(weights_only=True)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            networks = hypernetwork.read(path, self.allow_pickle or ctx.allow_pickle)
        except (hypernetwork.HypernetworkError, weights.WeightFileError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        if self.strength == 0:
            return {"model": self.model}
        with torch.no_grad():
            unet, patched = hypernetwork.patched_unet(self.model.unet, networks, self.strength)
        if patched == 0:
            widths = ", ".join(str(width) for width in sorted(networks))
            raise ctx.error(
                f"{path.name}: no attention layer of this model has an input width it covers ({widths})",
                "file",
            )
        return {"model": replace(self.model, unet=unet)}
