"""LoadLoRA: a LoRA file's low-rank updates added to a model's UNet and text encoders."""

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
CLIP_ENCODERS = ("text_encoder", "text_encoder_2")  # Clip's attributes, in the order of family.encoders
_WHAT = {"unet": "UNet", "text_encoder": "text encoder", "text_encoder_2": "second text encoder"}


class LoadLoRA(ModelFileNode):
    """Apply a LoRA (kohya/A1111 or diffusers/PEFT format) to a model and its text encoders.

    LyCORIS LoHa and LoKr files (kohya naming) apply too; Tucker and DoRA ones are refused. SDXL has
    two text encoders: ``strength_clip`` scales the updates of each."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model, "clip": Clip}
    cache: ClassVar[str] = "model"
    kind: ClassVar[str] = "loras"
    family_from: ClassVar[dict[str, str]] = {"model": "model", "clip": "clip"}

    model: Model = Field(
        description="the model to patch (LoadCheckpoint or another LoadLoRA); left unchanged"
    )
    clip: Clip = Field(description="the text encoders to patch; left unchanged")
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
            encoders = self._encoders(parsed)  # first: a missing encoder names the LoRA's family best
            unet_deltas = self._deltas(parsed, "unet", self.model.unet, str(self.model.family))
            te_deltas = {
                attribute: self._deltas(parsed, target, getattr(self.clip, attribute), str(self.clip.family))
                for target, attribute in encoders.items()
            }
        except (weights.WeightFileError, lora.LoraError) as exc:
            raise ctx.error(f"{path.name}: {exc}", "file") from None
        model, clip = self.model, self.clip
        with torch.no_grad():
            if unet_deltas and self.strength_model != 0:
                model = replace(model, unet=patch.patched_copy(model.unet, unet_deltas, self.strength_model))
            if self.strength_clip != 0:
                patched = {
                    attribute: patch.patched_copy(getattr(clip, attribute), deltas, self.strength_clip)
                    for attribute, deltas in te_deltas.items()
                    if deltas
                }
                clip = replace(clip, **patched) if patched else clip
        return {"model": model, "clip": clip}

    def _encoders(self, parsed: lora.LoraFile) -> dict[str, str]:
        """The LoRA's text-encoder targets (diffusers folder names) -> the Clip attribute holding that
        encoder (the SDXL refiner's only encoder, ``text_encoder_2``, is its ``text_encoder``);
        LoraError for layers of an encoder this model does not have."""
        family = self.clip.family
        held = {
            slot.folder: attribute for slot, attribute in zip(family.encoders, CLIP_ENCODERS, strict=False)
        }
        wanted = {layer.target for layer in parsed.layers} - {"unet"}
        for target in sorted(wanted - held.keys(), reverse=True):
            if target == "text_encoder_2":
                raise lora.LoraError(
                    f"an SDXL LoRA (it has layers for SDXL's second text encoder): it does not fit this "
                    f"{family} model"
                )
            raise lora.LoraError(
                f"it has layers for a first text encoder (lora_te_/lora_te1_/text_encoder.), which this "
                f"{family} model does not have: a LoRA for SDXL base or SD 1.x/2.x?"
            )
        return {target: held[target] for target in sorted(wanted)}

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
    def _deltas(
        parsed: lora.LoraFile, target: str, root: torch.nn.Module, family: str
    ) -> dict[str, patch.Delta]:
        """module path -> its update, made when patched (one module's update in memory at a time)."""
        layers = parsed.for_target(target)
        found, unmatched = lora.match(layers, root, f"{family} {_WHAT[target]}")
        if unmatched:
            raise lora.LoraError(
                f"{len(unmatched)} of its {len(layers)} {_WHAT[target]} layers match nothing in this "
                f"{family} model "
                f"({len(layers) - len(unmatched)} matched; first unmatched: {', '.join(unmatched[:3])}); "
                f"is this {parsed.format}-format LoRA for another model family?"
            )
        return {path: functools.partial(lora.delta, matched) for path, matched in found.items()}
