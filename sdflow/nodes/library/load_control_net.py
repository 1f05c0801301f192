"""LoadControlNet: a ControlNet or T2I-Adapter file or folder, for ApplyControlNet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models import controlnet, resolver, weights
from sdflow.models.families import Family
from sdflow.models.folders import ModelNotFound
from sdflow.models.module_fill import ArchitectureMismatch
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import ControlNet


class LoadControlNet(ModelFileNode):
    """Load a ControlNet (SD 1.x/2.x/SDXL; diffusers or A1111/ComfyUI layout) or a T2I-Adapter."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"control_net": ControlNet}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "controlnet"

    file: str = Field(
        min_length=1,
        description=(
            "a ControlNet / T2I-Adapter .safetensors (LDM layout as A1111 and ComfyUI keep them, or "
            "diffusers layout), a diffusers folder, a name in the model folders' controlnet folders, or "
            "'builtin:tiny-sd15-control'"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.pth/.ckpt/.bin), with torch.load(weights_only=True)"
    )
    config: str = Field(
        "",
        description=(
            "for a single-file ControlNet: a diffusers checkpoint folder (or 'builtin:NAME') whose UNet "
            "config describes it; empty: the detected family's config shipped with sdflow"
        ),
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        problems = super().precheck(constants, scope)
        if problems:
            return problems
        path = cls.located(constants["file"], scope)
        if path.is_file() and weights.is_pickle(path):
            return []  # read only when run (with the opt-in)
        try:
            controlnet.probe(path)
        except (OSError, weights.WeightFileError, controlnet.ControlFileError) as exc:
            return [("file", str(exc))]
        if constants.get("config"):
            try:
                _config_folder(constants["config"])
            except ModelNotFound as exc:
                return [("config", str(exc))]
        return []

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        """The control's family from its config.json or header (None: unknown or an SD 1.x/2.x adapter)."""
        try:
            path = cls.located(constants["file"], RunScope())
            if path.is_file() and weights.is_pickle(path):
                return {"control_net": None}
            return {"control_net": controlnet.probe(path).family}
        except (LookupError, OSError, ValueError):
            return {"control_net": None}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            config = _config_folder(self.config) if self.config else None
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "config") from None
        try:
            module, found = controlnet.load(
                path, ctx.device, ctx.dtype, self.allow_pickle or ctx.allow_pickle, config
            )
        except (controlnet.ControlFileError, weights.WeightFileError, ArchitectureMismatch, OSError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        name = path.name if path.is_dir() else path.stem
        return {"control_net": ControlNet(module, found.kind, found.family, name)}


# ``config`` is a path too, or a checkpoint name / built-in (kept as text when no such path exists)
LoadControlNet.path_fields = ("file", "config")
LoadControlNet.folder_kinds = {"file": "controlnet", "config": "checkpoints"}


def _config_folder(spec: str) -> Path:
    """The diffusers folder ``config`` names (a checkpoint or ControlNet folder, or a built-in)."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    source = resolver.checkpoint(spec)
    if source.kind != "folder":
        raise ModelNotFound(f"'{spec}' is not a diffusers folder with configs")
    return source.path
