"""LoadCheckpoint: a Stable Diffusion checkpoint split into model, CLIP and VAE."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models import checkpoints, detect, resolver
from sdflow.models.families import Family
from sdflow.models.folders import ModelNotFound
from sdflow.models.loaded import LoadOptions
from sdflow.nodes.base import Absent, Node, RunContext
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Clip, Model, Vae
from sdflow.nodes.types_vision import ClipVision

NO_CLIP_VISION = (
    "only unCLIP checkpoints (a StableUnCLIPImg2ImgPipeline folder, an sd21-unclip single file) bring a "
    "CLIP vision model: load one with LoadCLIPVision"
)
NO_EMBEDDER = (
    "this unCLIP file holds no image encoder (embedder.model.visual.*): load its CLIP vision model "
    "(ViT-H for unCLIP-H, ViT-L for unCLIP-L) with LoadCLIPVision"
)


class LoadCheckpoint(Node):
    """Load an SD 1.x/2.x, SDXL, SD3 or Flux checkpoint: a single file, a model-folder name, a folder or a
    built-in (SD3 and Flux: diffusers folders).

    An unCLIP checkpoint (SD 2.1 unCLIP: a StableUnCLIPImg2ImgPipeline folder, or Stability's
    sd21-unclip-h / -l single file with its image encoder under ``embedder.``) also gives its CLIP
    vision model as ``clip_vision``; for any other checkpoint that output is not there, and a node
    linked to it stops with a located error."""

    version: ClassVar[int] = 3  # 3: unCLIP single files load their image side (were plain SD 2.x)
    outputs: ClassVar[dict[str, type]] = {"model": Model, "clip": Clip, "vae": Vae, "clip_vision": ClipVision}
    cache: ClassVar[str] = "model"
    # a path next to the workflow file wins; otherwise the text is kept (a name, builtin:, hub id)
    path_fields: ClassVar[tuple[str, ...]] = ("checkpoint", "config")
    folder_kinds: ClassVar[dict[str, str]] = {"checkpoint": "checkpoints", "config": "checkpoints"}

    checkpoint: str = Field(
        "builtin:tiny-sd15",
        min_length=1,
        description=(
            "a .safetensors single file (path, or name in the model folders), a diffusers folder, "
            "'builtin:NAME', or a hub id (needs network)"
        ),
    )
    prediction: Literal["auto", "epsilon", "v_prediction"] = Field(
        "auto",
        description=(
            "what the UNet predicts; auto: the file's modelspec metadata or 'v_pred' key, else for SD 2.x "
            "single files ComfyUI's weight statistic, else the folder's scheduler config / epsilon"
        ),
    )
    config: str = Field(
        "",
        description=(
            "for a single file: a diffusers folder (or 'builtin:NAME') whose configs and tokenizer "
            "describe its architecture; empty: the detected family's configs shipped with sdflow"
        ),
    )
    allow_pickle: bool = Field(
        False,
        description="load .ckpt/.pt/.bin/.pth pickle files (they can run code; read weights-only)",
    )

    @classmethod
    def fingerprint(cls, constants: dict[str, Any], ctx: RunContext) -> str | None:
        with ctx.scope.active():  # the precheck's folder listing, not a second one
            parts = [checkpoints.fingerprint(constants["checkpoint"])]
            if constants.get("config"):
                parts.append(checkpoints.fingerprint(constants["config"]))
        return ":".join(parts)

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        with scope.active():  # one listing of the model folders for this and the fingerprint
            try:
                source = resolver.checkpoint(constants["checkpoint"])
                checkpoints.check(source, constants.get("allow_pickle", False))
            except (ModelNotFound, checkpoints.BadCheckpoint) as exc:
                return [("checkpoint", str(exc))]
            if constants.get("config"):
                try:
                    resolver.config_folder(constants["config"])
                except ModelNotFound as exc:
                    return [("config", str(exc))]
        return []

    @classmethod
    def families(
        cls, constants: dict[str, Any], inputs: dict[str, Family | None]
    ) -> dict[str, Family | None]:
        """Decided from the checkpoint's configs or single-file header, without loading weights."""
        family = detect.checkpoint_family(constants["checkpoint"])
        return {"model": family, "clip": family}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        try:
            config = resolver.config_folder(self.config) if self.config else None
        except ModelNotFound as exc:
            raise ctx.error(str(exc), "config") from None
        options = LoadOptions(self.prediction, config, self.allow_pickle or ctx.allow_pickle)
        try:
            source = resolver.checkpoint(self.checkpoint)
            loaded = checkpoints.load(source, ctx.device, ctx.dtype, options)
        except (ModelNotFound, ValueError, OSError) as exc:
            raise ctx.error(f"cannot load checkpoint: {exc}", "checkpoint") from None
        more = {}  # SDXL base's OpenCLIP ViT-bigG; SD3's CLIP-G and T5; Flux's T5
        for number, pair in enumerate(
            zip(loaded.more_tokenizers, loaded.more_text_encoders, strict=True), start=2
        ):
            more[f"tokenizer_{number}"], more[f"text_encoder_{number}"] = pair
        vision: ClipVision | Absent = Absent(NO_CLIP_VISION)
        noising = None
        if loaded.unclip is not None:  # an unCLIP checkpoint: its image encoder and noise augmentation
            vision_model, preprocess, noising = loaded.unclip
            if vision_model is not None:
                vision = ClipVision(vision_model, preprocess, "image_encoder")
            else:  # a single file without its embedder: the augmentation reads another encoder's embeds
                vision = Absent(NO_EMBEDDER)
        return {
            "model": Model(
                loaded.unet,
                loaded.scheduler_config,
                loaded.family,
                image_noising=noising,
                source=source.location if source.kind == "folder" else None,
            ),
            "clip": Clip(loaded.tokenizer, loaded.text_encoder, loaded.family, **more),
            "vae": Vae(loaded.vae),
            "clip_vision": vision,
        }
