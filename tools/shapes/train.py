"""Train a tiny Stable Diffusion 1.x-style text-to-image model on coloured shapes, on the CPU.

Phases: (1) AutoencoderKL on the pictures; (2) encode every picture to latents once; (3) UNet noise
prediction (SD's scaled_linear DDPM schedule) jointly with a small CLIP text encoder, ~10% empty captions
for classifier-free guidance. Saves a ``StableDiffusionPipeline`` folder in fp16 safetensors.

    HF_HUB_OFFLINE=1 python tools/shapes/train.py --out /tmp/shapes_run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import make_dataset
from tokenizer import VOCAB_SIZE, save_byte_tokenizer

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


class Clock:
    """Wall-clock since construction, for logs."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self) -> str:
        """Elapsed time as ``'123s'``."""
        return f"{time.monotonic() - self.start:.0f}s"


def log(message: str) -> None:
    """Print one progress line, flushed."""
    print(message, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output pipeline folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--vae-steps", type=int, default=1000)
    parser.add_argument("--unet-steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64, help="UNet batch size")
    parser.add_argument("--vae-batch-size", type=int, default=32)
    parser.add_argument("--dataset-size", type=int, default=30000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--text-lr", type=float, default=5e-4)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--uncond-prob", type=float, default=0.1)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--checkpoint-every", type=int, default=500, help="UNet steps between saves")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--vae-from", type=Path, default=None, help="reuse a trained vae/ folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def build_vae() -> AutoencoderKL:
    """SD-style VAE: 4 blocks (8x downsampling), 4 latent channels, 16/32/32/32 channels."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def build_text_encoder() -> CLIPTextModel:
    """Small CLIP text transformer over the 514 byte-level tokens."""
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=64,
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
    )
    return CLIPTextModel(config)


def build_unet() -> UNet2DConditionModel:
    """~4M-parameter SD-style UNet on 8x8x4 latents, cross-attending to 64-d text states."""
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def lr_lambda(warmup: int, total: int, floor: float = 0.1):
    """Linear warm-up then cosine decay to ``floor`` of the base rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train_vae(vae: AutoencoderKL, images: np.ndarray, args: argparse.Namespace, clock: Clock) -> None:
    """Reconstruction MSE + small KL on random batches of the dataset."""
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(100, args.vae_steps))
    for step in range(1, args.vae_steps + 1):
        batch = to_pixels(images[torch.randint(len(images), (args.vae_batch_size,)).numpy()])
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        mse = F.mse_loss(recon, batch)
        loss = mse + args.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.vae_steps:
            log(f"vae step {step}/{args.vae_steps} mse {mse.item():.5f} elapsed {clock()}")
    vae.eval()


@torch.no_grad()
def encode_all(vae: AutoencoderKL, images: np.ndarray, chunk: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every picture (unscaled latents)."""
    means, stds = [], []
    for start in range(0, len(images), chunk):
        posterior = vae.encode(to_pixels(images[start : start + chunk])).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def scaling_factor(mean: torch.Tensor, std: torch.Tensor, count: int = 2048) -> float:
    """``1 / std`` of sampled latents of the first ``count`` pictures."""
    sample = mean[:count] + std[:count] * torch.randn_like(mean[:count])
    return float(1.0 / sample.std())


def tokenize(tokenizer: CLIPTokenizer, captions: list[str]) -> torch.Tensor:
    """Token ids padded to 77, exactly as ``StableDiffusionPipeline`` does."""
    unique = sorted(set(captions))
    ids = tokenizer(
        unique,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
    )
    table = {caption: row for caption, row in zip(unique, ids.input_ids, strict=True)}
    return torch.tensor([table[c] for c in captions], dtype=torch.long)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` over parameters."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def train_unet(
    unet: UNet2DConditionModel,
    text_encoder: CLIPTextModel,
    latents: tuple[torch.Tensor, torch.Tensor, float],
    token_ids: torch.Tensor,
    empty_ids: torch.Tensor,
    args: argparse.Namespace,
    clock: Clock,
    checkpoint,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Epsilon prediction with joint text-encoder training; returns the EMA copies."""
    mean, std, factor = latents
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    unet.train()
    text_encoder.train()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    optimizer = torch.optim.AdamW(
        [
            {"params": unet.parameters(), "lr": args.lr},
            {"params": text_encoder.parameters(), "lr": args.text_lr},
        ],
        weight_decay=1e-2,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(200, args.unet_steps))
    params = [*unet.parameters(), *text_encoder.parameters()]
    running = 0.0
    for step in range(1, args.unet_steps + 1):
        index = torch.randint(len(mean), (args.batch_size,))
        clean = (mean[index] + std[index] * torch.randn_like(mean[index])) * factor
        ids = token_ids[index].clone()
        ids[torch.rand(args.batch_size) < args.uncond_prob] = empty_ids
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, SCHEDULE["num_train_timesteps"], (args.batch_size,))
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        states = text_encoder(ids)[0]
        loss = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=states).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_text, text_encoder, decay)
        running += loss.item()
        if step % args.log_every == 0 or step == args.unet_steps:
            log(f"unet step {step}/{args.unet_steps} loss {running / args.log_every:.4f} elapsed {clock()}")
            running = 0.0
        if step % args.checkpoint_every == 0 and step < args.unet_steps:
            checkpoint(ema_unet, ema_text, step)
    return ema_unet, ema_text


def save_pipeline(
    out: Path,
    vae: AutoencoderKL,
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    unet: UNet2DConditionModel,
    note: dict,
) -> None:
    """Write a ``StableDiffusionPipeline`` folder (DDIM scheduler, no safety checker) in fp16 safetensors."""
    scheduler = DDIMScheduler(
        **SCHEDULE,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=copy.deepcopy(vae),
        text_encoder=copy.deepcopy(text_encoder),
        tokenizer=tokenizer,
        unet=copy.deepcopy(unet),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(note, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run all phases and save the pipeline."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clock = Clock()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = save_byte_tokenizer(args.out / "tokenizer")
    images, captions = make_dataset(args.dataset_size, seed=args.seed)
    log(f"dataset {len(images)} pictures, {len(set(captions))} captions, elapsed {clock()}")

    if args.vae_from is not None:
        vae = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32)
        log(f"vae loaded from {args.vae_from}")
    else:
        vae = build_vae()
        log(f"vae {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params")
        train_vae(vae, images, args, clock)
    vae.eval().requires_grad_(False)
    mean, std = encode_all(vae, images)
    factor = scaling_factor(mean, std)
    vae.register_to_config(scaling_factor=factor)
    vae.save_pretrained(args.out / "vae_fp32")
    log(f"latents {tuple(mean.shape)} scaling_factor {factor:.4f} elapsed {clock()}")

    unet, text_encoder = build_unet(), build_text_encoder()
    log(
        f"unet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M params, text encoder "
        f"{sum(p.numel() for p in text_encoder.parameters()) / 1e6:.2f}M params"
    )
    note = {key: str(value) for key, value in vars(args).items()}

    def checkpoint(ema_unet: UNet2DConditionModel, ema_text: CLIPTextModel, step: int) -> None:
        save_pipeline(args.out, vae, ema_text, tokenizer, ema_unet, {**note, "unet_step": step})
        log(f"checkpoint at unet step {step} saved to {args.out}, elapsed {clock()}")

    empty_ids = tokenize(tokenizer, [""])[0]
    token_ids = tokenize(tokenizer, captions)
    ema_unet, ema_text = train_unet(
        unet,
        text_encoder,
        (mean, std, factor),
        token_ids,
        empty_ids,
        args,
        clock,
        checkpoint,
    )
    note = {
        **note,
        "unet_step": args.unet_steps,
        "wall_seconds": round(time.monotonic() - clock.start),
    }
    save_pipeline(args.out, vae, ema_text, tokenizer, ema_unet, note)
    log(f"done: saved {args.out}, elapsed {clock()}")


if __name__ == "__main__":
    main()
