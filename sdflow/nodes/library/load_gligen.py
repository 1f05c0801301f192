"""LoadGLIGEN: a GLIGEN file (ComfyUI's gligen folder layout, or diffusers'), for GLIGENTextBoxApply."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.models import gligen, weights
from sdflow.models.families import Family
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types_grounding import Gligen


class LoadGLIGEN(ModelFileNode):
    """Load a GLIGEN text-box model (SD 1.x/2.x): gated layers that draw phrases inside boxes.

    ComfyUI's files (gligen_sd14_textbox_pruned.safetensors: LDM block names) and diffusers' layout
    (a UNet with attention_type "gated": its fuser and position_net tensors) both load."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"gligen": Gligen}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "gligen"

    file: str = Field(
        min_length=1,
        description="a GLIGEN .safetensors: a path or a name in the model folders' gligen folders",
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.ckpt/.pth/.bin), with torch.load(weights_only=True)"
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        problems = super().precheck(constants, scope)
        if problems:
            return problems
        try:
            gligen.probe(cls.located(constants["file"], scope))
        except (OSError, weights.WeightFileError, gligen.GligenFileError) as exc:
            return [("file", str(exc))]
        return []

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        """SD 1.x for phrases 768 wide, SD 2.x for 1024 (None: unknown)."""
        try:
            found = gligen.probe(cls.located(constants["file"], RunScope()))
        except (LookupError, OSError, ValueError):
            return {"gligen": None}
        return {"gligen": found.family if found else None}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            loaded = gligen.load(path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle)
        except (gligen.GligenFileError, weights.WeightFileError, OSError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"gligen": Gligen(loaded, path.stem)}
