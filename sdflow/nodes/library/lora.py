"""LoadLoRA: a LoRA file's low-rank updates added to a model's UNet and text encoder."""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models import lora, patch, weights
from sdflow.nodes.base import RunContext
from sdflow.nodes.model_files import ModelFileNode
from sdflow.nodes.types import Clip, Model

MAX_STRENGTH = 100.0  # ComfyUI's bounds, so every workflow `sdflow import comfy` reads validates


class LoadLoRA(ModelFileNode):
    """Apply a LoRA (kohya/A1111 or diffusers/PEFT format) to a model and its text encoder."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model, "clip": Clip}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "loras"

    model: Model = Field(
        description="the model to patch (LoadCheckpoint or another LoadLoRA); left unchanged"
    )
    clip: Clip = Field(description="the text encoder to patch; left unchanged")
    file: str = Field(
        min_length=1,
        description=(
            "a LoRA .safetensors (or a folder holding one, as diffusers saves them): a path, or a name "
            "in the model folders' loras (Lora) folders"
        ),
    )
    strength_model: float = Field(
        1.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, description="scale of the UNet update (0 = none)"
    )
    strength_clip: float = Field(
        1.0, ge=-MAX_STRENGTH, le=MAX_STRENGTH, description="scale of the text-encoder update (0 = none)"
    )
    allow_pickle: bool = Field(
        False, description="also read pickle files (.pt/.ckpt/.bin), with torch.load(weights_only=True)"
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        path = self._weights_file(self.resolved(ctx), ctx)
        try:
            tensors, metadata = weights.read_all(path, self.allow_pickle or ctx.allow_pickle)
            parsed = lora.parse(tensors, metadata)
            unet_deltas = self._deltas(parsed, "unet", self.model.unet)
            te_deltas = self._deltas(parsed, "text_encoder", self.clip.text_encoder)
        except (weights.WeightFileError, lora.LoraError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        model, clip = self.model, self.clip
        with torch.no_grad():
            if unet_deltas and self.strength_model != 0:
                model = replace(model, unet=patch.patched_copy(model.unet, unet_deltas, self.strength_model))
            if te_deltas and self.strength_clip != 0:
                encoder = patch.patched_copy(clip.text_encoder, te_deltas, self.strength_clip)
                clip = replace(clip, text_encoder=encoder)
        return {"model": model, "clip": clip}

    @staticmethod
    def _weights_file(path: Path, ctx: RunContext) -> Path:
        """The LoRA file itself; a folder (as diffusers saves LoRAs) must hold exactly one."""
        if not path.is_dir():
            return path
        files = sorted(path.glob("*.safetensors")) or sorted(
            p for p in path.iterdir() if p.is_file() and weights.is_pickle(p)
        )
        if len(files) != 1:
            found = ", ".join(p.name for p in files) or "none"
            raise ctx.error(f"the folder {path} should hold one LoRA weights file (found: {found})", "file")
        return files[0]

    @staticmethod
    def _deltas(parsed: lora.LoraFile, target: str, root: torch.nn.Module) -> dict[str, patch.Delta]:
        """module path -> its update, made when patched (one module's update in memory at a time)."""
        layers = parsed.for_target(target)
        found, unmatched = lora.match(layers, root, target)
        if unmatched:
            what = "UNet" if target == "unet" else "text encoder"
            raise lora.LoraError(
                f"{len(unmatched)} of its {len(layers)} {what} layers match nothing in this model "
                f"({len(layers) - len(unmatched)} matched; first unmatched: {', '.join(unmatched[:3])}); "
                f"is this {parsed.format}-format LoRA for another model family?"
            )
        return {path: functools.partial(lora.delta, matched) for path, matched in found.items()}
