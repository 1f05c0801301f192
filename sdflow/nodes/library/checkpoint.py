"""LoadCheckpoint: a Stable Diffusion checkpoint split into model, CLIP and VAE."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes import checkpoints
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Clip, Model, Vae


class LoadCheckpoint(Node):
    """Load an SD 1.x checkpoint: a built-in name, a diffusers folder, or a hub id."""

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
            checkpoints.resolve(constants["checkpoint"])
        except checkpoints.CheckpointNotFound as exc:
            return [("checkpoint", str(exc))]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            source = checkpoints.resolve(self.checkpoint)
            loaded = checkpoints.load(source, ctx.device, ctx.dtype)
        except (checkpoints.CheckpointNotFound, ValueError, OSError) as exc:
            raise ctx.error(f"cannot load checkpoint: {exc}", "checkpoint") from None
        return {
            "model": Model(loaded.unet, loaded.scheduler_config),
            "clip": Clip(loaded.tokenizer, loaded.text_encoder),
            "vae": Vae(loaded.vae),
        }
