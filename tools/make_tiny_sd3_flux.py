"""Make the tiny SD3 and Flux built-in checkpoints (random, seeded weights).

``python tools/make_tiny_sd3_flux.py [--out-root sdflow/builtin]`` writes ``tiny-sd3/`` (a
``StableDiffusion3Pipeline`` folder: SD3Transformer2DModel, CLIP-L and CLIP-G stand-ins with
projections, a T5 encoder, a 16-channel VAE with scaling and shift factors, flow-matching Euler with
shift 3) and ``tiny-flux/`` (a ``FluxPipeline`` folder: FluxTransformer2DModel with guidance
embeddings, CLIP-L and T5, the same kind of VAE, flow-matching Euler with Flux-dev's dynamic
shifting). Tokenizers are written offline: the byte-level CLIP tokenizer (tools/tokenizer.py) and a
character-level T5 (Unigram) tokenizer. Deterministic: same versions, same bytes. Run it as a script.
"""

from __future__ import annotations

import argparse
import shutil
import string
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from make_tiny_checkpoints import (
    POSTERIOR_LOGVAR,
    TEXT_CONFIG,
    VAE_CONFIG,
    jitter_constant_params,
    make_text_encoder,
)
from tokenizer import save_byte_tokenizer
from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel, T5TokenizerFast

SEEDS = {"sd3": 3100, "flux": 3200, "clip_l": 3300, "clip_g": 3400, "t5": 3500, "vae": 3600}
CLIP_G_CONFIG = {**TEXT_CONFIG, "hidden_size": 48, "projection_dim": 48, "hidden_act": "gelu"}
T5_WIDTH = 96  # wider than CLIP-L + CLIP-G (80): SD3 zero-pads the CLIP sequence to T5's width
T5_PIECES = ["<pad>", "</s>", "<unk>"]
T5_CONFIG: dict[str, Any] = {
    "d_model": T5_WIDTH,
    "d_kv": 16,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 32,
    "feed_forward_proj": "gated-gelu",
    "dense_act_fn": "gelu_new",
    "is_gated_act": True,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}
# 16 latent channels with SD3's / Flux's own scaling and shift factors
VAE_16 = {**VAE_CONFIG, "latent_channels": 16}
SD3_VAE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}
FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
SD3_TRANSFORMER: dict[str, Any] = {
    "sample_size": 8,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": T5_WIDTH,
    "caption_projection_dim": 32,
    "pooled_projection_dim": TEXT_CONFIG["projection_dim"] + CLIP_G_CONFIG["projection_dim"],
    "pos_embed_max_size": 64,
}
FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": T5_WIDTH,
    "pooled_projection_dim": TEXT_CONFIG["hidden_size"],
    "guidance_embeds": True,
    "axes_dims_rope": (2, 2, 4),
}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
# A random transformer's output is tiny; this gain brings the predicted velocity near unit std.
OUT_GAIN = 4.0
# and it barely listens to the text: this gain on the text projection makes the prompt visibly matter.
TEXT_GAIN = 4.0


def t5_vocab() -> list[tuple[str, float]]:
    """A character-level Unigram vocabulary: each printable character, alone and word-initial."""
    characters = string.ascii_letters + string.digits + string.punctuation
    pieces = [(p, 0.0) for p in T5_PIECES] + [("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in characters] + [(c, -4.0) for c in characters]
    return pieces


def save_t5_tokenizer(folder: Path) -> T5TokenizerFast:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = T5TokenizerFast(vocab=t5_vocab(), extra_ids=0, model_max_length=512)
    tokenizer.save_pretrained(folder)
    return T5TokenizerFast.from_pretrained(folder)


def make_t5(seed: int, vocab_size: int) -> T5EncoderModel:
    torch.manual_seed(seed)
    model = T5EncoderModel(T5Config(vocab_size=vocab_size, **T5_CONFIG))
    jitter_constant_params(model, seed + 1)
    return model.eval()


def make_vae16(seed: int, factors: dict[str, float]) -> AutoencoderKL:
    """A tiny 16-channel KL autoencoder with a point posterior (log-variance -30)."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**{**VAE_16, **factors})
    jitter_constant_params(vae, seed + 1)
    channels = VAE_16["latent_channels"]
    with torch.no_grad():
        vae.quant_conv.weight[channels:].zero_()
        vae.quant_conv.bias[channels:].fill_(POSTERIOR_LOGVAR)
    return vae.eval()


def scaled_output(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    jitter_constant_params(model, seed + 1)
    with torch.no_grad():
        model.proj_out.weight.mul_(OUT_GAIN)
        model.proj_out.bias.mul_(OUT_GAIN)
        model.context_embedder.weight.mul_(TEXT_GAIN)
    return model.eval()


def save_sd3(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    torch.manual_seed(SEEDS["sd3"])
    transformer = scaled_output(SD3Transformer2DModel(**SD3_TRANSFORMER), SEEDS["sd3"])
    tokenizer_3 = save_t5_tokenizer(folder / "tokenizer_3")
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(SD3_SCHEDULER),
        vae=make_vae16(SEEDS["vae"], SD3_VAE),
        text_encoder=make_text_encoder(SEEDS["clip_l"], CLIPTextModelWithProjection),
        tokenizer=save_byte_tokenizer(folder / "tokenizer"),
        text_encoder_2=make_text_encoder(SEEDS["clip_g"], CLIPTextModelWithProjection, CLIP_G_CONFIG),
        tokenizer_2=save_byte_tokenizer(folder / "tokenizer_2", pad_token="!"),
        text_encoder_3=make_t5(SEEDS["t5"], len(tokenizer_3)),
        tokenizer_3=tokenizer_3,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


def save_flux(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    torch.manual_seed(SEEDS["flux"])
    transformer = scaled_output(FluxTransformer2DModel(**FLUX_TRANSFORMER), SEEDS["flux"])
    tokenizer_2 = save_t5_tokenizer(folder / "tokenizer_2")
    pipeline = FluxPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(FLUX_SCHEDULER),
        vae=make_vae16(SEEDS["vae"], FLUX_VAE),
        text_encoder=make_text_encoder(SEEDS["clip_l"], CLIPTextModel),
        tokenizer=save_byte_tokenizer(folder / "tokenizer"),
        text_encoder_2=make_t5(SEEDS["t5"], len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)


def main(argv: list[str] | None = None) -> None:
    """Build both tiny checkpoints under ``--out-root``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-root", type=Path, default=Path("sdflow/builtin"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    save_sd3(args.out_root / "tiny-sd3")
    save_flux(args.out_root / "tiny-flux")


if __name__ == "__main__":
    main()
