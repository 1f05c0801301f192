"""CheckpointSave: write a model, its text encoders and a VAE as one single-file checkpoint."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import Field

from sdflow.models.ldm_write import NoLayout, checkpoint_state, layout_of, unclip_state
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.output_prefix import prefix_place, prefix_problems
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Clip, Model, SavedFiles, Vae
from sdflow.nodes.types_vision import ClipVision


class CheckpointSave(Node):
    """Write model, CLIP and VAE as one .safetensors in the original (LDM) layout, which ComfyUI,
    A1111 and sdflow's LoadCheckpoint read back (e.g. after merging).

    An unCLIP model (SD 2.1 unCLIP) is written in Stability's sd21-unclip layout: its class embedding
    and noise augmentation (schedule, normaliser mean and std) always, its image encoder under
    ``embedder.model.visual.`` when ``clip_vision`` is linked."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"files": SavedFiles}
    is_output: ClassVar[bool] = True
    same_family: ClassVar[tuple[str, ...]] = ("model", "clip")

    model: Model = Field(description="the UNet to save (merged, LoRA-patched or as loaded)")
    clip: Clip = Field(description="the text encoders to save, of the model's family")
    vae: Vae = Field(description="the VAE to save")
    clip_vision: ClipVision | None = Field(
        None, description="an unCLIP model's image encoder to save with it (LoadCheckpoint's clip_vision)"
    )
    filename_prefix: str = Field(
        "checkpoints/sdflow",
        min_length=1,
        pattern=r"^[^\\]+$",
        description="file name start in the output folder, may include sub-folders: PREFIX_00001.safetensors",
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return prefix_problems(constants)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        from safetensors.torch import save

        try:
            layout = layout_of(self.model.family)
        except NoLayout as exc:
            raise ctx.error(str(exc), "model") from None
        encoders = [encoder for _, encoder in self.clip.pairs]
        try:
            state = checkpoint_state(layout, self.model.unet, self.vae.vae, encoders)
        except (KeyError, ValueError) as exc:
            raise ctx.error(
                f"cannot write this model as a {layout.family.label} file: {exc}", "model"
            ) from None
        state |= self._image_side(ctx)
        metadata = {key: str(value) for key, value in ctx.metadata.items()}
        metadata["modelspec.prediction_type"] = self.model.scheduler_config.get("prediction_type", "epsilon")
        metadata["sdflow.scheduler_config"] = json.dumps(self.model.scheduler_config, sort_keys=True)
        data = save(state, metadata)
        folder, stem = prefix_place(ctx.output_dir, self.filename_prefix)
        path = ctx.write_new(folder, stem, ".safetensors", lambda handle: handle.write(data))
        return {"files": SavedFiles((str(path),))}

    def _image_side(self, ctx: RunContext) -> dict[str, Any]:
        """An unCLIP model's noise augmentation, and the linked image encoder, under Stability's names."""
        noising = self.model.image_noising
        if noising is None:
            if self.clip_vision is not None:
                raise ctx.error("only an unCLIP model saves a CLIP vision model with it", "clip_vision")
            return {}
        encoder = self.clip_vision.model if self.clip_vision is not None else None
        width, made = noising.mean.shape[-1], encoder.config.projection_dim if encoder else None
        if made not in (None, width):
            raise ctx.error(
                f"this CLIP vision model makes {made}-wide embeds, the model reads {width}", "clip_vision"
            )
        try:
            return unclip_state(encoder, noising.scheduler.betas, (noising.mean, noising.std))
        except KeyError as exc:
            raise ctx.error(f"cannot write this CLIP vision model: {exc}", "clip_vision") from None
