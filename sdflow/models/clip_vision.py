"""CLIP vision encoders (transformers' CLIPVisionModelWithProjection) with their image preprocessing.

A model is a transformers folder (config.json and weights, preprocessor_config.json optional), a
diffusers ``image_encoder`` folder, or one .safetensors as ComfyUI's ``clip_vision`` folder keeps it
(transformers' key names; the config is read off the tensor shapes). Preprocessing (shortest edge
resized, centre crop, CLIP mean/std) runs in torch on the picture's device.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sdflow.models import weights

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64  # the heads of a tower of another width: 64 wide, as ViT-B/L
KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}  # hidden size -> heads (ViT-B, L, H, bigG)
OPENAI_WIDTHS = (768, 1024)  # OpenAI's ViT-B/L use quick_gelu; the LAION towers (H, bigG) gelu
_LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")
PREFIXES = ("", "clip_vision_model.", "image_encoder.", "cond_stage_model.", "embedder.model.visual.")


class ClipVisionFileError(ValueError):
    """A file or folder that holds no CLIP vision model sdflow can read."""


@dataclass(frozen=True)
class Preprocess:
    """How a picture becomes the encoder's input: shortest edge to ``resize``, centre crop to ``crop``."""

    resize: int
    crop: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def __call__(self, pixels: torch.Tensor, center_crop: bool = True) -> torch.Tensor:
        """(batch, 3, h, w) in [0, 1] -> the normalised (batch, 3, crop, crop) input, on its device.
        Without ``center_crop`` the whole picture is squeezed to the square instead."""
        pixels = pixels.float()
        height, width = pixels.shape[-2:]
        if center_crop:
            scale = self.resize / min(height, width)
            size = (max(int(height * scale), self.crop), max(int(width * scale), self.crop))
        else:
            size = (self.crop, self.crop)
        if size != (height, width):
            pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        pixels = pixels[..., top : top + self.crop, left : left + self.crop].clamp(0, 1)
        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        return (pixels - mean) / std


@dataclass(frozen=True)
class Encoded:
    """What a CLIP vision model says of a picture batch."""

    image_embeds: torch.Tensor  # (batch, projection_dim)
    penultimate: torch.Tensor  # (batch, tokens, hidden): the second-to-last layer's hidden states
    last_hidden_state: torch.Tensor  # (batch, tokens, hidden)


def encode(model: torch.nn.Module, inputs: torch.Tensor) -> Encoded:
    """Run ``model`` (CLIPVisionModelWithProjection) on preprocessed ``inputs``."""
    parameter = next(model.parameters())
    with torch.inference_mode():
        out = model(inputs.to(parameter.device, parameter.dtype), output_hidden_states=True)
    return Encoded(out.image_embeds, out.hidden_states[-2], out.last_hidden_state)


def load(
    path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> tuple[Any, Preprocess]:
    """(CLIPVisionModelWithProjection in eval mode on ``device``, its preprocessing)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if path.is_dir():
        folder = path / "image_encoder" if (path / "image_encoder" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            raise ClipVisionFileError(f"'{path}' is a folder without a config.json")
        model = CLIPVisionModelWithProjection.from_pretrained(str(folder), local_files_only=True)
        preprocess = folder_preprocess(folder, model.config.image_size)
    else:
        state, _ = weights.read_all(path, allow_pickle)
        state = vision_state(state, path)
        config = CLIPVisionConfig(**config_from(state))
        model = CLIPVisionModelWithProjection(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ClipVisionFileError(
                f"'{path.name}' does not fit a CLIP vision model: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}"
            )
        preprocess = Preprocess(config.image_size, config.image_size)
    return model.to(device, dtype).eval(), preprocess


def vision_state(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The transformers-named tensors of a CLIP vision file (a known prefix stripped)."""
    for prefix in PREFIXES:
        key = prefix + "vision_model.embeddings.patch_embedding.weight"
        if key in state:
            picked = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            return {k: v for k, v in picked.items() if k.startswith(("vision_model.", "visual_projection."))}
    raise ClipVisionFileError(
        f"'{path.name}' is not a CLIP vision model: no vision_model.embeddings.patch_embedding.weight in it"
    )


def config_from(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """CLIPVisionConfig arguments read off the tensors' shapes (heads and activation by width)."""
    patch = state["vision_model.embeddings.patch_embedding.weight"]
    hidden, _, patch_size, _ = patch.shape
    positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
    grid = round((positions - 1) ** 0.5)
    layers = 1 + max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    if "visual_projection.weight" not in state:
        raise ClipVisionFileError("no visual_projection.weight: a CLIP vision model without its projection")
    return {
        "hidden_size": hidden,
        "intermediate_size": state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "projection_dim": state["visual_projection.weight"].shape[0],
        "num_hidden_layers": layers,
        "num_attention_heads": KNOWN_HEADS.get(hidden, max(hidden // HEAD_DIM, 1)),
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "hidden_act": "quick_gelu" if hidden in OPENAI_WIDTHS else "gelu",
    }


def folder_preprocess(folder: Path, image_size: int) -> Preprocess:
    """The folder's preprocessor_config.json (or a sibling feature_extractor's), else CLIP's defaults
    at the model's image size (as diffusers' load_ip_adapter makes them)."""
    for candidate in (
        folder / "preprocessor_config.json",
        folder.parent / "feature_extractor" / "preprocessor_config.json",
    ):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            size, crop = config.get("size", image_size), config.get("crop_size", image_size)
            resize = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
            crop = crop.get("height") if isinstance(crop, dict) else crop
            mean = tuple(config.get("image_mean", CLIP_MEAN))
            std = tuple(config.get("image_std", CLIP_STD))
            return Preprocess(int(resize), int(crop), mean, std)
    return Preprocess(image_size, image_size)


def describe(path: Path) -> str:
    """'CLIP vision, 1280 wide, 32 layers, 224 px' from the header or config alone."""
    try:
        if path.is_dir():
            folder = path / "image_encoder" if (path / "image_encoder" / "config.json").is_file() else path
            config = json.loads((folder / "config.json").read_text())
            config = config.get("vision_config", config)
            hidden, layers, size = config["hidden_size"], config["num_hidden_layers"], config["image_size"]
        else:
            shapes = weights.read_header(path).shapes()
            state = vision_state({k: torch.empty(0) for k in shapes}, path)
            hidden = shapes[next(k for k in shapes if k.endswith("patch_embedding.weight"))][0]
            layers = 1 + max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
            size = None
    except (OSError, KeyError, ValueError, StopIteration) as exc:
        return f"unrecognised: {exc}"
    return f"CLIP vision, {hidden} wide, {layers} layers" + (f", {size} px" if size else "")
