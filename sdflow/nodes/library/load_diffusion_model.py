"""LoadDiffusionModel: an SD3 / Flux transformer file on its own (ComfyUI's UNETLoader)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models import dit_load, resolver, split_load
from sdflow.models.families import FAMILIES, Family
from sdflow.models.folders import ModelNotFound
from sdflow.models.gguf_files import GgufUnavailable
from sdflow.models.module_fill import ArchitectureMismatch
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types import Model

WeightDtype = Literal["default", "fp8_e4m3fn", "fp8_e5m2", "fp16", "bf16", "fp32"]


class LoadDiffusionModel(ModelFileNode):
    """Load a diffusion transformer file alone (SD3, Flux dev / schnell): safetensors, fp8 or .gguf."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "diffusion_models"

    file: str = Field(
        min_length=1,
        description=(
            "a transformer .safetensors (any float dtype, fp8 too) or .gguf file: a path, or a name in "
            "the model folders' diffusion_models (unet) folders"
        ),
    )
    weight_dtype: WeightDtype = Field(
        "default",
        description=(
            "how the weights are kept: default = the run's dtype; fp8_*: 8-bit storage, each layer cast "
            "to the run's dtype while it computes; fp16/bf16/fp32: that dtype. GGUF files stay quantized"
        ),
    )
    config: str = Field(
        "",
        description=(
            "a diffusers folder (or 'builtin:NAME') whose transformer and scheduler configs describe the "
            "file; empty: from the file's shapes and the family's shipped scheduler config"
        ),
    )

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        try:
            found = dit_load.inspect_file(resolver.resolve(cls.kind, constants["file"])).transformer
        except (LookupError, OSError, ValueError, ImportError):
            return {"model": None}
        return {"model": FAMILIES.get(found.family) if found else None}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            config = resolver.config_folder(self.config) if self.config else None
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "config") from None
        try:
            loaded = dit_load.load_transformer(path, ctx.device, ctx.dtype, self.weight_dtype, config)
            family = FAMILIES[loaded.found.family]
            schedule = split_load.scheduler_config(family, config, loaded.found.variant)
        except (dit_load.TransformerFileError, ArchitectureMismatch, split_load.SplitLoadError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        except (GgufUnavailable, OSError, ValueError) as exc:
            raise ctx.error(f"cannot load {path.name}: {exc}", "file") from None
        denoiser = family.denoiser(loaded.module)
        denoiser.sdflow_compute_dtype = ctx.dtype  # fp8 / GGUF weights compute in the run's dtype
        return {"model": Model(denoiser, schedule, family)}
