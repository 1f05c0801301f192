"""Make the tiny SD 1.x-architecture built-in checkpoints (random, seeded weights).

``python tools/make_tiny_checkpoints.py [--out-root sdflow/builtin]`` writes ``tiny-sd15/``
(a ``StableDiffusionPipeline`` folder) and ``tiny-sd15-inpaint/`` (the same with a 9-channel
inpainting UNet). Both load offline with ``from_pretrained`` and run a 20-step 64x64 txt2img
in well under a second on a CPU. The script is deterministic: same versions, same bytes.
Run it as a script (its folder, holding ``tokenizer.py``, is then on ``sys.path``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from tokenizer import VOCAB_SIZE, save_byte_tokenizer
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS_ID, EOS_ID = VOCAB_SIZE - 2, VOCAB_SIZE - 1
TEXT_PREFIX = "text_model."
SEEDS = {"unet": 1500, "unet_inpaint": 1600, "vae": 1700, "text_encoder": 1800}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": (8, 16, 16, 16),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
    "scaling_factor": 0.18215,
}
TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "intermediate_size": 37,
    "projection_dim": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": EOS_ID,
}
SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "trained_betas": None,
    "skip_prk_steps": True,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    # Not a PNDM argument: kept in the saved config (as SD 1.5 does) for schedulers swapped in
    # with ``from_config`` (DDIM's own default is True).
    "clip_sample": False,
}
# Std of the noise added to parameters that random init leaves constant (norm affines, biases).
CONSTANT_JITTER = 0.05
# Random init predicts eps with std ~0.33 and barely listens to the text; these gains bring eps
# to std ~1 (like real SD) and make prompt, CFG scale and clip skip visibly change the image.
EPS_GAIN = 3.0
CROSS_ATTN_GAIN = 3.0
# Random init encodes to latents of std ~0.34; real SD's are ~1 / scaling_factor ~ 5.5, so that
# scaled latents have unit std and an init image holds its own against the noise in img2img.
LATENT_GAIN = 16.0
# The VAE posterior's log-variance bias: std = exp(-15) ~ 3e-7, so sample() == mode() in fp32.
POSTERIOR_LOGVAR = -30.0


def jitter_constant_params(model: torch.nn.Module, seed: int) -> list[str]:
    """Add small seeded noise to every parameter whose elements are all equal; return their names."""
    generator = torch.Generator().manual_seed(seed)
    touched = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().flatten()
            if bool((flat == flat[0]).all()):
                noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
                param.add_(CONSTANT_JITTER * noise)
                touched.append(name)
    return touched


def scale_module(module: torch.nn.Module, gain: float) -> None:
    """Multiply a layer's weight and bias in place."""
    module.weight.mul_(gain)
    module.bias.mul_(gain)


def make_unet(in_channels: int, seed: int) -> UNet2DConditionModel:
    """A tiny SD 1.x UNet with seeded random weights and no constant parameters."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=in_channels, **UNET_CONFIG)
    jitter_constant_params(unet, seed + 1)
    with torch.no_grad():
        scale_module(unet.conv_out, EPS_GAIN)
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                scale_module(module.to_out[0], CROSS_ATTN_GAIN)
    return unet.eval()


def make_vae(seed: int) -> AutoencoderKL:
    """A tiny 8x-downsampling KL autoencoder, SD-scaled latents, posterior std ~0."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    jitter_constant_params(vae, seed + 1)
    latent_channels = VAE_CONFIG["latent_channels"]
    with torch.no_grad():
        vae.quant_conv.weight[:latent_channels].mul_(LATENT_GAIN)
        vae.quant_conv.bias[:latent_channels].mul_(LATENT_GAIN)
        vae.quant_conv.weight[latent_channels:].zero_()
        vae.quant_conv.bias[latent_channels:].fill_(POSTERIOR_LOGVAR)
    return vae.eval()


def make_text_encoder(
    seed: int, cls: type = CLIPTextModel, config: dict[str, Any] | None = None
) -> CLIPTextModel:
    """A tiny 4-layer CLIP text encoder (``cls``: with or without a text projection; ``config``:
    TEXT_CONFIG by default) with seeded random weights and no constant parameters."""
    torch.manual_seed(seed)
    text_encoder = cls(CLIPTextConfig(**(config or TEXT_CONFIG)))
    jitter_constant_params(text_encoder, seed + 1)
    return text_encoder.eval()


def check_tokenizer(tokenizer: CLIPTokenizer) -> None:
    """Fail unless the tokenizer's special ids match the text encoder config."""
    ids = (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    if ids != (BOS_ID, EOS_ID, EOS_ID) or len(tokenizer) != VOCAB_SIZE:
        raise ValueError(f"tokenizer special ids {ids} / size {len(tokenizer)} mismatch")


def save_pipeline(
    folder: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    inpaint: bool,
) -> None:
    """Write a self-contained fp32-safetensors pipeline folder, replacing any old one."""
    if folder.exists():
        shutil.rmtree(folder)
    tokenizer = save_byte_tokenizer(folder / "tokenizer")
    check_tokenizer(tokenizer)
    pipeline_cls = StableDiffusionInpaintPipeline if inpaint else StableDiffusionPipeline
    pipeline = pipeline_cls(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    add_text_model_prefix(folder / "text_encoder" / "model.safetensors")


def add_text_model_prefix(path: Path) -> None:
    """Rewrite a flat ``CLIPTextModel`` file with the ``text_model.`` keys real SD checkpoints use."""
    state = load_file(path)
    prefixed = {k if k.startswith(TEXT_PREFIX) else TEXT_PREFIX + k: v for k, v in state.items()}
    save_file(prefixed, path, metadata={"format": "pt"})


def main(argv: list[str] | None = None) -> None:
    """Build both tiny checkpoints under ``--out-root``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=Path("sdflow/builtin"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vae = make_vae(SEEDS["vae"])
    text_encoder = make_text_encoder(SEEDS["text_encoder"])
    unet = make_unet(4, SEEDS["unet"])
    save_pipeline(args.out_root / "tiny-sd15", unet, vae, text_encoder, inpaint=False)
    unet_inpaint = make_unet(9, SEEDS["unet_inpaint"])
    inpaint_folder = args.out_root / "tiny-sd15-inpaint"
    save_pipeline(inpaint_folder, unet_inpaint, vae, text_encoder, inpaint=True)


if __name__ == "__main__":
    main()
