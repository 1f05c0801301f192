"""Distil a tiny autoencoder (diffusers' AutoencoderTiny, TAESD's design) from the shapes VAE.

TAESD's conventions relative to the SD VAE hold here too: its latents are the SD VAE's *scaled* latents
(posterior mean x ``scaling_factor``), so its own ``scaling_factor`` is 1 and a sampler's latent goes to
either decoder unchanged (sdflow's VAEDecode divides by the VAE's ``scaling_factor``). Its encoder reads
pixels in [-1, 1] and its decoder writes them, as every diffusers VAE does.

Losses, on pictures drawn by ``data.py``:
- encoder: MSE to the shapes VAE's scaled posterior mean;
- decoder: L1 + MSE to the shapes VAE's decode of the same latent (half the batch decodes the
  posterior mean, half a posterior sample, which is what the UNet was trained on), plus
  ``--picture-weight`` x L1 to the training picture on the posterior-mean half.

The result is a diffusers AutoencoderTiny folder in fp16 safetensors (``builtin:shapes-taesd``).

    HF_HUB_OFFLINE=1 python tools/shapes/train_taesd.py --out /tmp/shapes_taesd --minutes 25
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import make_dataset

from sdflow.models.taesd import TEACHER_KEY, VAE_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]
TEACHER = ROOT / "sdflow" / "builtin" / "shapes" / "vae"
EVAL_SEED = 12345  # held-out pictures, never trained on


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output AutoencoderTiny folder")
    parser.add_argument("--teacher", type=Path, default=TEACHER, help="the AutoencoderKL folder to distil")
    parser.add_argument("--channels", type=int, default=16, help="width of every encoder/decoder block")
    parser.add_argument("--init-from", type=Path, default=None, help="go on training this saved folder")
    parser.add_argument("--steps", type=int, default=6000, help="at most this many steps")
    parser.add_argument("--minutes", type=float, default=0.0, help="and at most this long (0: no limit)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dataset-size", type=int, default=8000)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--picture-weight", type=float, default=0.5)
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def build_student(channels: int) -> AutoencoderTiny:
    """TAESD's layout (4 levels, 8x down/upsampling, 4 latent channels) at ``channels`` wide."""
    widths = (channels,) * 4
    return AutoencoderTiny(
        encoder_block_out_channels=widths, decoder_block_out_channels=widths, latent_channels=4
    )


def progress(step: int, steps: int, started: float, minutes: float) -> float:
    """How far training is, 0..1: by steps, or by wall time when that runs out first."""
    done = step / steps
    if minutes > 0:
        done = max(done, (time.monotonic() - started) / (60 * minutes))
    return min(done, 1.0)


def learning_rate(base: float, done: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Linear warm-up over the first ``warmup`` of training, then cosine down to ``floor`` x base."""
    if done < warmup:
        return base * max(done / warmup, 0.02)
    x = (done - warmup) / (1 - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * x)))


@torch.no_grad()
def teacher_targets(teacher: AutoencoderKL, images: np.ndarray, chunk: int = 250) -> dict[str, torch.Tensor]:
    """Per picture, once: the scaled posterior mean and one scaled posterior sample, and the teacher's
    decodes of both (fp16, to keep them in memory)."""
    scale = teacher.config.scaling_factor
    names = ("mean", "sample", "mean_decoded", "sample_decoded")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, len(images), chunk):
        posterior = teacher.encode(to_pixels(images[start : start + chunk])).latent_dist
        for name, latents in (("mean", posterior.mean * scale), ("sample", posterior.sample() * scale)):
            parts[name].append(latents)
            decoded = teacher.decode(latents / scale).sample.clamp(-1, 1)
            parts[name + "_decoded"].append(decoded.half())
    return {name: torch.cat(tensors) for name, tensors in parts.items()}


@torch.no_grad()
def evaluate(
    student: AutoencoderTiny, images: np.ndarray, targets: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Held-out SSIM/PSNR of the student's decode against the teacher's (same latents), encoder MSE."""
    from sdflow.golden.compare import psnr, ssim

    pixels = to_pixels(images)
    theirs = targets["mean_decoded"].float().numpy()
    ours = student.decode(targets["mean"]).sample.clamp(-1, 1).numpy()
    latents = student.encode(pixels).latents
    roundtrip = student.decode(latents).sample.clamp(-1, 1).numpy()
    return {
        "ssim": ssim((theirs + 1) / 2, (ours + 1) / 2),
        "psnr": psnr((theirs + 1) / 2, (ours + 1) / 2),
        "encoder_mse": float(F.mse_loss(latents, targets["mean"])),
        "roundtrip_ssim": ssim((pixels.numpy() + 1) / 2, (roundtrip + 1) / 2),
    }


def teacher_digest(teacher: Path) -> str:
    """sha256 of the teacher's weights: how ``taesd.find`` pairs a model's VAE with this one."""
    return hashlib.sha256((teacher / VAE_WEIGHTS).read_bytes()).hexdigest()


def save(student: AutoencoderTiny, out: Path, note: dict) -> None:
    """The AutoencoderTiny folder in fp16 safetensors, with what made it in training.json."""
    copy.deepcopy(student).to(torch.float16).save_pretrained(out, safe_serialization=True)
    (out / "training.json").write_text(json.dumps(note, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.monotonic()
    teacher = AutoencoderKL.from_pretrained(args.teacher, torch_dtype=torch.float32).eval()
    teacher.requires_grad_(False)
    images, _ = make_dataset(args.dataset_size, seed=args.seed)
    targets = teacher_targets(teacher, images)
    held_out = make_dataset(256, seed=EVAL_SEED)[0]
    held_out_targets = teacher_targets(teacher, held_out)
    print(f"teacher targets ready, elapsed {time.monotonic() - started:.0f}s", flush=True)
    started = time.monotonic()  # --minutes counts training only
    student = build_student(args.channels)
    if args.init_from is not None:
        saved = AutoencoderTiny.from_pretrained(args.init_from, torch_dtype=torch.float32)
        student.load_state_dict(saved.state_dict())
    ema = copy.deepcopy(student).requires_grad_(False)
    parameters = sum(p.numel() for p in student.parameters())
    print(f"student: {parameters} parameters, {len(images)} pictures", flush=True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    step, done = 0, 0.0
    half = args.batch_size // 2
    while step < args.steps and done < 1.0:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(args.lr, done)
        index = torch.randint(len(images), (args.batch_size,))
        pixels = to_pixels(images[index.numpy()])
        first, second = index[:half], index[half:]
        latents = torch.cat([targets["mean"][first], targets["sample"][second]])
        decoded = torch.cat([targets["mean_decoded"][first], targets["sample_decoded"][second]]).float()
        encoder_loss = F.mse_loss(student.encode(pixels).latents, targets["mean"][index])
        ours = student.decode(latents).sample
        decoder_loss = F.l1_loss(ours, decoded) + F.mse_loss(ours, decoded)
        picture_loss = F.l1_loss(ours[:half], pixels[:half])
        loss = encoder_loss + decoder_loss + args.picture_weight * picture_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        step += 1
        with torch.no_grad():
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            for kept, live in zip(ema.parameters(), student.parameters(), strict=True):
                kept.lerp_(live, 1 - decay)
        done = progress(step, args.steps, started, args.minutes)
        if step % args.log_every == 0:
            print(
                f"step {step} done {done:.2f} encoder {encoder_loss.item():.4f} "
                f"decoder {decoder_loss.item():.4f} picture {picture_loss.item():.4f} "
                f"elapsed {time.monotonic() - started:.0f}s",
                flush=True,
            )
        if step % (args.log_every * 10) == 0:
            print(f"  held-out (EMA): {evaluate(ema, held_out, held_out_targets)}", flush=True)
            save(ema, args.out, {"step": step, "partial": True})
    scores = evaluate(ema, held_out, held_out_targets)
    print(f"final held-out (EMA): {scores}", flush=True)
    note = {k: str(v) for k, v in vars(args).items()}
    note.update(steps_done=step, wall_seconds=round(time.monotonic() - started), parameters=parameters)
    note[TEACHER_KEY] = teacher_digest(args.teacher)
    note.update({f"held_out_{k}": round(v, 4) for k, v in scores.items()})
    save(ema, args.out, note)


if __name__ == "__main__":
    main()
