"""LoadVAE: a VAE of its own (single file or diffusers folder), to replace a checkpoint's."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models import resolver, weights
from sdflow.models import vae as vae_files
from sdflow.models.folders import ModelNotFound
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types import Vae


class LoadVAE(ModelFileNode):
    """Load a VAE: a single file (LDM or diffusers layout) or a diffusers folder, to replace a model's."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"vae": Vae}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "vae"

    file: str = Field(
        min_length=1,
        description=(
            "a VAE .safetensors (e.g. sd-vae-ft-mse), a TAESD decoder file (its encoder file beside it), "
            "or a diffusers VAE folder (AutoencoderKL, ConsistencyDecoderVAE, AutoencoderTiny): a path, "
            "or a name in the model folders' vae (VAE) folders"
        ),
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.pt/.ckpt/.bin), with torch.load(weights_only=True)"
    )
    config: str = Field(
        "",
        description=(
            "for a single file: a diffusers folder (or 'builtin:NAME') whose VAE config describes it; "
            "empty: its shapes, with SD 1.x's config for the rest"
        ),
    )
    latent_format: Literal["sd3", "flux"] = Field(
        "flux",
        description=(
            "a 16-channel VAE file's latent scaling and shift, which its weights do not tell: Flux's "
            "(ae.safetensors) or SD3's"
        ),
    )

    @classmethod
    def read_from(cls, path: Path) -> Path:
        return vae_files.source(path)  # a pipeline folder's vae/ only, not its UNet

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self.resolved(ctx)
        try:
            config = resolver.config_folder(self.config) if self.config else None
            allow = self.allow_pickle or ctx.allow_pickle
            vae = vae_files.load(path, ctx.device, ctx.dtype, allow, config, self.latent_format)
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "config") from None
        except (weights.WeightFileError, vae_files.VaeError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        return {"vae": Vae(vae, sampling_decoder=type(vae).__name__ == "ConsistencyDecoderVAE")}
