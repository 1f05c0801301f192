"""Load an original (LDM-layout) single-file checkpoint offline, holding its weights only once.

Detect the layout from the keys (``detect``), build each component empty (parameters on the meta
device) from the diffusers configs shipped in ``sdflow/models/configs/<family>/`` (or a folder the
user names), then read every weight straight from the file into the tensor the module keeps
(``ldm_keys`` says where it lives). Nothing touches the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdflow.models.detect import Detection, Layout, detect, norm_std_key
from sdflow.models.ldm_keys import clip_mapping, openclip_mapping, unet_mapping, vae_mapping
from sdflow.models.loaded import LoadedCheckpoint, LoadOptions, text_encoder_class, tokenizer_fixed
from sdflow.models.module_fill import build_empty, fill_weights, read_json
from sdflow.models.weights import WeightReader

CONFIGS = Path(__file__).resolve().parent / "configs"
V_NORM_STD = 0.09  # ComfyUI's threshold for SD 2.x v-prediction


def config_folder(layout: Layout, config: Path | None = None) -> Path:
    """The diffusers config folder for a layout: the user's, else the one shipped for its family."""
    return config if config is not None else CONFIGS / layout.config


def load(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    options: LoadOptions | None = None,
) -> LoadedCheckpoint:
    """Every component of the single file at ``path`` on ``device`` in ``dtype``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    options = options or LoadOptions()
    with WeightReader(path, options.allow_pickle) as reader:
        found = detect(reader.shapes, reader.metadata)
        layout, folder = found.layout, config_folder(found.layout, options.config)
        chosen = resolve_prediction(found, options.prediction, reader)

        unet_config = read_json(folder / "unet" / "config.json")
        unet_config["in_channels"] = found.in_channels
        if found.unclip is not None:  # SD 2.1 unCLIP: the class embedding reads [embeds, level embedding]
            unet_config["class_embed_type"] = "projection"
            unet_config["projection_class_embeddings_input_dim"] = found.unclip.class_width
        unet = build_empty(UNet2DConditionModel.from_config, unet_config)
        fill_weights(unet, unet_mapping(unet_config, layout.unet_prefix), reader, dtype, device, "UNet")

        vae_config = read_json(folder / "vae" / "config.json")
        vae_dtype = torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast") else dtype
        vae = build_empty(AutoencoderKL.from_config, vae_config)
        fill_weights(vae, vae_mapping(vae_config, layout.vae_prefix), reader, vae_dtype, device, "VAE")

        encoders, tokenizers = [], []
        for part in layout.text_encoders:
            encoder = _text_encoder(folder / part.component)
            mapping = openclip_mapping(part.prefix) if part.style == "openclip" else None
            mapping = mapping or clip_mapping(part.prefix, reader.shapes)
            fill_weights(encoder, mapping, reader, dtype, device, f"text encoder ({part.prefix}*)")
            encoders.append(encoder)
            tokenizer_folder = folder / part.component.replace("text_encoder", "tokenizer")
            tokenizers.append(tokenizer_fixed(_tokenizer(tokenizer_folder), encoder))

        unclip = None
        if found.unclip is not None:
            from sdflow.models import unclip_file  # it builds on this module's helpers

            unclip = unclip_file.load_parts(reader, found.unclip, options.config, device, dtype)

    scheduler_config = read_json(folder / "scheduler" / "scheduler_config.json")
    scheduler_config["prediction_type"] = chosen
    return LoadedCheckpoint(
        unet,
        vae,
        encoders[0],
        tokenizers[0],
        scheduler_config,
        layout.family,
        encoders[1:],
        tokenizers[1:],
        unclip=unclip,
    )


def resolve_prediction(found: Detection, requested: str, reader: WeightReader) -> str:
    """``requested`` unless 'auto'; then what the file declares, else ComfyUI's SD 2.x weight
    statistic, else epsilon."""
    if requested != "auto":
        return requested
    if found.prediction is not None:
        return found.prediction
    key = norm_std_key(reader.shapes) if found.layout.v_by_norm_std and not found.inpainting else None
    if key is not None:
        std = reader.read(key, torch.float32).std(unbiased=False)
        return "v_prediction" if float(std) > V_NORM_STD else "epsilon"
    return "epsilon"


def _text_encoder(folder: Path) -> torch.nn.Module:
    from transformers import CLIPTextConfig

    config = CLIPTextConfig.from_dict(read_json(folder / "config.json"))
    return build_empty(text_encoder_class(config), config)


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    if not (folder / "vocab.json").is_file() and not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"missing tokenizer file {folder / 'vocab.json'}")
    return CLIPTokenizer.from_pretrained(folder)
