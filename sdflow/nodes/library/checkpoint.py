"""LoadCheckpoint: a Stable Diffusion checkpoint split into model, CLIP and VAE."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes import checkpoints
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Clip, Model, Vae


class LoadCheckpoint(Node):
    """Load an SD 1.x/2.x, SDXL or SDXL refiner checkpoint: a built-in name, a diffusers folder, a hub id."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model, "clip": Clip, "vae": Vae}
    cache: ClassVar[str] = "model"

    checkpoint: str = Field(
        "builtin:tiny-sd15",
        min_length=1,
        description="'builtin:NAME', a diffusers folder, or a hub id (needs network)",
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        return checkpoints.fingerprint(constants["checkpoint"])

    @classmethod
    def precheck(cls, constants: dict[str, Any]) -> list[tuple[str, str]]:
        try:
            source = checkpoints.resolve(constants["checkpoint"])
        except checkpoints.CheckpointNotFound as exc:
            return [("checkpoint", str(exc))]
        if Path(source).is_dir():  # a local folder: its family is known from a few JSON files
            try:
                checkpoints.detect_family(source)
            except (ValueError, OSError) as exc:
                return [("checkpoint", f"cannot load checkpoint: {exc}")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            source = checkpoints.resolve(self.checkpoint)
            loaded = checkpoints.load(source, ctx.device, ctx.dtype)
        except (checkpoints.CheckpointNotFound, ValueError, OSError) as exc:
            raise ctx.error(f"cannot load checkpoint: {exc}", "checkpoint") from None
        family = loaded.family
        encoders, tokenizers = loaded.text_encoders, loaded.tokenizers
        second = (tokenizers[1], encoders[1]) if len(encoders) > 1 else (None, None)
        return {
            "model": Model(loaded.unet, loaded.scheduler_config, family),
            "clip": Clip(tokenizers[0], encoders[0], family, *second),
            "vae": Vae(loaded.vae),
        }
