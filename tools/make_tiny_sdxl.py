"""Make the tiny SDXL-architecture built-in checkpoints (random, seeded weights).

``python tools/make_tiny_sdxl.py [--out-root sdflow/builtin]`` writes ``tiny-sdxl/`` (a
``StableDiffusionXLPipeline`` folder: CLIP-L-like and projecting bigG-like text encoders, a UNet with
SDXL's ``text_time`` embedding) and ``tiny-sdxl-refiner/`` (a ``StableDiffusionXLImg2ImgPipeline``
folder: the base's second encoder only, aesthetic-score time ids), as SDXL's own pair shares its
second text encoder and VAE. Deterministic: same versions, same bytes. Run it as a script.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from make_tiny_checkpoints import (
    CROSS_ATTN_GAIN,
    EPS_GAIN,
    SCHEDULER_CONFIG,
    SEEDS,
    TEXT_CONFIG,
    add_text_model_prefix,
    check_tokenizer,
    jitter_constant_params,
    make_text_encoder,
    make_vae,
    scale_module,
)
from tokenizer import save_byte_tokenizer
from transformers import CLIPTextModelWithProjection

XL_SEEDS = {"unet": 2500, "unet_refiner": 2600, "text_encoder_2": 2800}
TIME_EMBED_DIM = 8
# The bigG stand-in is wider than the CLIP-L one (as in SDXL, 1280 vs 768): diffusers' single-file
# converter tells the two apart by width.
TEXT_2_CONFIG = {**TEXT_CONFIG, "hidden_size": 48, "projection_dim": 48, "hidden_act": "gelu"}
POOLED_DIM = TEXT_2_CONFIG["projection_dim"]
# Random init barely listens to the pooled embedding and time ids: this gain makes them (and so
# SDXL's size / aesthetic conditioning) visibly change the image, as they do in real SDXL.
ADD_EMBED_GAIN = 3.0

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 48),
    "layers_per_block": 1,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 1),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "norm_num_groups": 16,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TIME_EMBED_DIM,
}
# SDXL's scheduler config (EulerDiscreteScheduler, leading spacing) on SD's betas.
XL_SCHEDULER = {
    **{k: SCHEDULER_CONFIG[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")},
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    # Kept in the config (as SDXL does) for schedulers swapped in with ``from_config``.
    "clip_sample": False,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


def make_unet(context: int, time_ids: int, seed: int) -> UNet2DConditionModel:
    """A tiny SDXL-style UNet with seeded random weights and no constant parameters."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        cross_attention_dim=context,
        projection_class_embeddings_input_dim=POOLED_DIM + time_ids * TIME_EMBED_DIM,
        **UNET_CONFIG,
    )
    jitter_constant_params(unet, seed + 1)
    with torch.no_grad():
        scale_module(unet.conv_out, EPS_GAIN)
        scale_module(unet.add_embedding.linear_2, ADD_EMBED_GAIN)
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                scale_module(module.to_out[0], CROSS_ATTN_GAIN)
    return unet.eval()


def save_base(folder: Path, vae: AutoencoderKL, encoder_2: CLIPTextModelWithProjection) -> None:
    """Write tiny-sdxl, replacing any old folder."""
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer = save_byte_tokenizer(folder / "tokenizer")
    check_tokenizer(tokenizer)
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=make_text_encoder(SEEDS["text_encoder"]),
        text_encoder_2=encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=save_byte_tokenizer(folder / "tokenizer_2", pad_token="!"),
        unet=make_unet(TEXT_CONFIG["hidden_size"] + TEXT_2_CONFIG["hidden_size"], 6, XL_SEEDS["unet"]),
        scheduler=EulerDiscreteScheduler.from_config(XL_SCHEDULER),
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    add_text_model_prefix(folder / "text_encoder" / "model.safetensors")


def save_refiner(folder: Path, vae: AutoencoderKL, encoder_2: CLIPTextModelWithProjection) -> None:
    """Write tiny-sdxl-refiner, replacing any old folder."""
    if folder.exists():
        shutil.rmtree(folder)
    pipeline = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=encoder_2,
        tokenizer=None,
        tokenizer_2=save_byte_tokenizer(folder / "tokenizer_2", pad_token="!"),
        unet=make_unet(TEXT_2_CONFIG["hidden_size"], 5, XL_SEEDS["unet_refiner"]),
        scheduler=EulerDiscreteScheduler.from_config(XL_SCHEDULER),
        requires_aesthetics_score=True,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


def main(argv: list[str] | None = None) -> None:
    """Build both tiny SDXL checkpoints under ``--out-root``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=Path("sdflow/builtin"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vae = make_vae(SEEDS["vae"])
    # The bigG stand-in: its text projection gives the pooled embedding.
    encoder_2 = make_text_encoder(XL_SEEDS["text_encoder_2"], CLIPTextModelWithProjection, TEXT_2_CONFIG)
    save_base(args.out_root / "tiny-sdxl", vae, encoder_2)
    save_refiner(args.out_root / "tiny-sdxl-refiner", vae, encoder_2)


if __name__ == "__main__":
    main()
