"""RepeatLatentBatch: repeat a latent batch, e.g. to draw several pictures from one img2img source."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Latent


class RepeatLatentBatch(Node):
    """The latent batch repeated ``amount`` times (noise mask too), as ComfyUI's node."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}

    latent: Latent = Field(
        description="the latents to repeat; their noise state is dropped (noise them again)"
    )
    amount: int = Field(1, ge=1, le=64, description="how many copies of the batch")

    def run(self, ctx: RunContext) -> dict[str, Any]:
        latent = self.latent
        if latent.noise is not None or latent.cut is not None:
            raise ctx.error(
                "repeat a clean latent: this one is noised already (repeat before AddNoise)", "latent"
            )
        if latent.masked_image is not None:
            raise ctx.error("a latent for a 9-channel inpainting model cannot be repeated", "latent")
        samples = latent.samples.repeat(self.amount, 1, 1, 1)
        mask = latent.noise_mask
        if mask is not None and mask.shape[0] > 1:
            mask = mask.repeat(self.amount, 1, 1, 1)
        return {"latent": latent.with_(samples=samples, noise_mask=mask)}
