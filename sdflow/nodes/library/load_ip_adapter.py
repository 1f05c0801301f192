"""LoadIPAdapter: an IP-Adapter file (h94/IP-Adapter layout), for ApplyIPAdapter."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.models import ip_adapter, weights
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types_vision import IPAdapter


class LoadIPAdapter(ModelFileNode):
    """Load an IP-Adapter (the plain and "plus" kinds; SD 1.x and SDXL)."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"ip_adapter": IPAdapter}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "ipadapter"

    file: str = Field(
        min_length=1,
        description=(
            "an IP-Adapter .safetensors or .bin: a path or a name in the model folders' ipadapter folders"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.bin), with torch.load(weights_only=True)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            loaded = ip_adapter.load(path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle)
        except (ip_adapter.IPAdapterFileError, weights.WeightFileError, OSError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"ip_adapter": IPAdapter(loaded, path.stem)}
