"""The image side of an SD 2.1 unCLIP single file (Stability's ``sd21-unclip-h`` / ``sd21-unclip-l``):
its CLIP image encoder and its noise augmentation, as ``unclip.load_parts`` gives them for a folder.

What the file holds (``unclip_detect.unclip_facts`` reads it from the header):
- ``embedder.model.visual.*``: the image encoder, the visual tower of OpenCLIP ViT-H/14 (-h) or of
  OpenAI's CLIP ViT-L/14 (-l), in OpenCLIP's names (``ldm_keys.openclip_vision_mapping``); read into a
  transformers CLIPVisionModelWithProjection built from a shipped config
  (``configs/sd2_unclip/image_encoder_h|l``), the ``config`` folder's ``image_encoder`` or, for any
  other tower, a config read off the shapes;
- ``noise_augmentor.betas`` (and the schedule derived from it): the augmentation's DDPM schedule; a
  file without it gets the ``config`` folder's ``image_noising_scheduler`` or the shipped one
  (squaredcos_cap_v2 over 1000 levels, ComfyUI's ``noise_aug_config``);
- ``noise_augmentor.data_mean`` / ``data_std`` when a converter kept them; Stability's code does not
  save them (non-persistent buffers), so a file without them normalises with mean 0 and std 1, as
  ComfyUI and Stability's sd21-unclip-h inference config do.

A file whose UNet has the class embedding but no ``embedder.*`` still loads: its noise augmentation
reads the embeds of a separately loaded CLIP vision model (LoadCLIPVision), as ComfyUI allows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdflow.models import clip_vision
from sdflow.models.ldm_keys import openclip_vision_mapping
from sdflow.models.module_fill import build_empty, fill_weights, read_json
from sdflow.models.unclip import ImageNoising
from sdflow.models.unclip_detect import EMBEDDER, ENCODER, NOISE_AUGMENTOR, UnclipFacts
from sdflow.models.weights import WeightReader

SHIPPED = Path(__file__).resolve().parent / "configs" / "sd2_unclip"
Shapes = dict[str, tuple[int, ...]]


class UnclipFileError(ValueError):
    """An unCLIP file whose image side is incomplete or does not fit its UNet."""


def load_parts(
    reader: WeightReader,
    facts: UnclipFacts,
    config: Path | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Any, Any, ImageNoising]:
    """(CLIP vision model, its preprocessing, the image noising) of the file ``reader`` reads; the
    first two None when the file holds no image encoder. ``config``: the user's config folder."""
    if facts.problem is not None:
        raise UnclipFileError(f"this unCLIP file cannot load: {facts.problem}")
    model = preprocess = None
    if facts.encoder_width is not None:
        model, preprocess = _encoder(reader, facts, config, device, dtype)
        if 2 * model.config.projection_dim != facts.class_width:
            raise UnclipFileError(
                f"the {ENCODER} config makes {model.config.projection_dim}-wide embeds but the UNet reads "
                f"{facts.embeds_width}-wide ones"
            )
    return model, preprocess, _noising(reader, facts, config, device)


def _encoder(
    reader: WeightReader, facts: UnclipFacts, config: Path | None, device: torch.device, dtype: torch.dtype
) -> tuple[Any, clip_vision.Preprocess]:
    """The image encoder, built empty from its config and filled from the file."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = _encoder_folder(facts, config)
    if folder is not None:
        settings = CLIPVisionConfig.from_dict(read_json(folder / "config.json"))
    else:
        settings = CLIPVisionConfig(**clip_vision.config_from(_tower_shapes(reader.shapes, facts)))
    model = build_empty(CLIPVisionModelWithProjection, settings)
    fill_weights(model, openclip_vision_mapping(EMBEDDER), reader, dtype, device, ENCODER)
    size = settings.image_size
    preprocess = clip_vision.folder_preprocess(folder, size) if folder else clip_vision.Preprocess(size, size)
    return model, preprocess


def _encoder_folder(facts: UnclipFacts, config: Path | None) -> Path | None:
    """The config folder of the image encoder: the user's config folder's, the shipped one of a
    known variant, or None (read off the shapes)."""
    if config is not None and (config / "image_encoder" / "config.json").is_file():
        return config / "image_encoder"
    return SHIPPED / f"image_encoder_{facts.variant.lower()}" if facts.variant else None


def _tower_shapes(shapes: Shapes, facts: UnclipFacts) -> dict[str, torch.Tensor]:
    """The tensors ``clip_vision.config_from`` reads, as empty stand-ins of the file's shapes under
    transformers' names."""
    mapping = openclip_vision_mapping(EMBEDDER)
    names = [
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "visual_projection.weight",
        *(f"vision_model.encoder.layers.{i}.mlp.fc1.weight" for i in range(facts.encoder_layers)),
    ]
    stand_ins = {}
    for name in names:
        source = mapping(name)
        assert source is not None
        shape = shapes.get(source.key)
        if shape is None:
            raise UnclipFileError(f"its {ENCODER} is incomplete: no {source.key}")
        shape = tuple(reversed(shape)) if source.kind == "transpose" else shape
        stand_ins[name] = torch.empty(shape, device="meta")
    return stand_ins


def _noising(
    reader: WeightReader, facts: UnclipFacts, config: Path | None, device: torch.device
) -> ImageNoising:
    """The normaliser (the file's stats, else mean 0 / std 1) and the schedule (the file's, else the
    config folder's image_noising_scheduler, else the shipped one)."""
    from diffusers import DDPMScheduler

    width = facts.embeds_width
    mean = _stat(reader, "data_mean", width, torch.zeros(1, width))
    std = _stat(reader, "data_std", width, torch.ones(1, width))
    if not bool((std > 0).all()):
        raise UnclipFileError(f"{NOISE_AUGMENTOR}data_std has values <= 0: the file is broken")
    betas = _betas(reader)
    if betas is not None:
        scheduler = DDPMScheduler(num_train_timesteps=betas.shape[0], trained_betas=betas.tolist())
    else:
        folder = config / "image_noising_scheduler" if config is not None else None
        folder = folder if folder is not None and folder.is_dir() else SHIPPED / "image_noising_scheduler"
        scheduler = DDPMScheduler.from_config(read_json(folder / "scheduler_config.json"))
    return ImageNoising(mean.to(device), std.to(device), scheduler)


def _stat(reader: WeightReader, name: str, width: int, default: torch.Tensor) -> torch.Tensor:
    key = NOISE_AUGMENTOR + name
    return reader.read(key, torch.float32).reshape(1, width).clone() if key in reader.shapes else default


def _betas(reader: WeightReader) -> torch.Tensor | None:
    """The augmentation's betas: the file's ``betas``, else derived from its ``alphas_cumprod``."""
    if NOISE_AUGMENTOR + "betas" in reader.shapes:
        betas = reader.read(NOISE_AUGMENTOR + "betas", torch.float32).clone()
    elif NOISE_AUGMENTOR + "alphas_cumprod" in reader.shapes:
        cumulative = reader.read(NOISE_AUGMENTOR + "alphas_cumprod", torch.float64)
        previous = torch.cat([torch.ones(1, dtype=torch.float64), cumulative[:-1]])
        betas = (1 - cumulative / previous).float()
    else:
        return None
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise UnclipFileError(f"{NOISE_AUGMENTOR}betas are not all in (0, 1): the file's schedule is broken")
    return betas
