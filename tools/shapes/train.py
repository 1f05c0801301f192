"""Train a tiny text-to-image model on coloured shapes, on the CPU: SD 1.x, SDXL base or SDXL refiner.

Phases: (1) AutoencoderKL on the pictures (or ``--vae-from`` a trained one); (2) encode every picture to
latents once; (3) UNet noise prediction (SD's scaled_linear DDPM schedule) jointly with the text
encoder(s), ~10% empty captions for classifier-free guidance. ``--arch`` picks the architecture
(``arch.py``); the result is the matching diffusers pipeline folder in fp16 safetensors.

    HF_HUB_OFFLINE=1 python tools/shapes/train.py --out /tmp/shapes_run
    HF_HUB_OFFLINE=1 python tools/shapes/train.py --arch sdxl --out /tmp/xl \
        --vae-from sdflow/builtin/shapes/vae --unet-steps 3000
    HF_HUB_OFFLINE=1 python tools/shapes/train.py --arch sdxl-refiner --base /tmp/xl --out /tmp/xl_refiner \
        --vae-from sdflow/builtin/shapes/vae --unet-steps 1000
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import arch as architectures
from arch import SCHEDULE, Arch
from data import make_dataset


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
    parser.add_argument("--arch", choices=("sd15", "sdxl", "sdxl-refiner"), default="sd15")
    parser.add_argument("--base", type=Path, default=None, help="sdxl-refiner: the trained base folder")
    parser.add_argument(
        "--init-from", type=Path, default=None, help="sdxl: start from this SD 1.x shapes folder's weights"
    )
    parser.add_argument("--latents-from", type=Path, default=None, help="reuse a run's latents.pt")
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
    model: Arch,
    latents: tuple[torch.Tensor, torch.Tensor, float],
    token_ids: list[torch.Tensor],
    empty_ids: list[torch.Tensor],
    args: argparse.Namespace,
    clock: Clock,
    checkpoint,
) -> tuple[UNet2DConditionModel, list[torch.nn.Module]]:
    """Epsilon prediction with joint training of the unfrozen text encoders; returns the EMA copies."""
    mean, std, factor = latents
    unet, encoders = model.unet, model.encoders
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    unet.train()
    trained = [e.train() for e in encoders if any(p.requires_grad for p in e.parameters())]
    ema_unet = copy.deepcopy(unet).eval()
    ema_text = [copy.deepcopy(e).eval() for e in encoders]
    text_params = [p for e in trained for p in e.parameters()]
    groups = [{"params": list(unet.parameters()), "lr": args.lr}]
    if text_params:
        groups.append({"params": text_params, "lr": args.text_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(200, args.unet_steps))
    params = [*unet.parameters(), *text_params]
    running = 0.0
    for step in range(1, args.unet_steps + 1):
        index = torch.randint(len(mean), (args.batch_size,))
        clean = (mean[index] + std[index] * torch.randn_like(mean[index])) * factor
        empty = torch.rand(args.batch_size) < args.uncond_prob
        ids = []
        for table, blank in zip(token_ids, empty_ids, strict=True):
            batch_ids = table[index].clone()
            batch_ids[empty] = blank
            ids.append(batch_ids)
        noise = torch.randn_like(clean)
        timesteps = torch.randint(0, model.max_timestep, (args.batch_size,))
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        states, added = model.condition(ids)
        prediction = unet(noisy, timesteps, encoder_hidden_states=states, added_cond_kwargs=added).sample
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        for ema, encoder in zip(ema_text, encoders, strict=True):
            ema_update(ema, encoder, decay)
        running += loss.item()
        if step % args.log_every == 0 or step == args.unet_steps:
            log(f"unet step {step}/{args.unet_steps} loss {running / args.log_every:.4f} elapsed {clock()}")
            running = 0.0
        if step % args.checkpoint_every == 0 and step < args.unet_steps:
            checkpoint(ema_unet, ema_text, step)
    return ema_unet, ema_text


def build(args: argparse.Namespace) -> Arch:
    """The architecture ``--arch`` names, its tokenizers already saved into ``--out``."""
    if args.arch == "sd15":
        return architectures.sd15(args.out)
    if args.arch == "sdxl":
        return architectures.sdxl(args.out, args.init_from)
    if args.base is None:
        raise SystemExit("--arch sdxl-refiner needs --base (the trained SDXL base folder)")
    return architectures.sdxl_refiner(args.out, args.base)


def main(argv: list[str] | None = None) -> None:
    """Run all phases and save the pipeline."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clock = Clock()
    args.out.mkdir(parents=True, exist_ok=True)
    model = build(args)
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
    if args.latents_from is not None:
        mean, std, factor = torch.load(args.latents_from)
    else:
        mean, std = encode_all(vae, images)
        factor = scaling_factor(mean, std)
    torch.save((mean, std, factor), args.out / "latents.pt")
    vae.register_to_config(scaling_factor=factor)
    vae.save_pretrained(args.out / "vae_fp32")
    log(f"latents {tuple(mean.shape)} scaling_factor {factor:.4f} elapsed {clock()}")

    sizes = ", ".join(f"{sum(p.numel() for p in e.parameters()) / 1e6:.2f}M" for e in model.encoders)
    unet_size = sum(p.numel() for p in model.unet.parameters()) / 1e6
    log(f"{args.arch}: unet {unet_size:.2f}M params, text encoders {sizes}")
    note = {key: str(value) for key, value in vars(args).items()}

    def checkpoint(ema_unet: UNet2DConditionModel, ema_text: list[torch.nn.Module], step: int) -> None:
        model.save(args.out, vae, ema_unet, ema_text, {**note, "unet_step": step})
        log(f"checkpoint at unet step {step} saved to {args.out}, elapsed {clock()}")

    empty_ids = [tokenize(t, [""])[0] for t in model.tokenizers]
    token_ids = [tokenize(t, captions) for t in model.tokenizers]
    ema_unet, ema_text = train_unet(model, (mean, std, factor), token_ids, empty_ids, args, clock, checkpoint)
    note = {
        **note,
        "unet_step": args.unet_steps,
        "wall_seconds": round(time.monotonic() - clock.start),
    }
    model.save(args.out, vae, ema_unet, ema_text, note)
    log(f"done: saved {args.out}, elapsed {clock()}")


if __name__ == "__main__":
    main()
