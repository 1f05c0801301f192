"""Train a tiny ControlNet for the built-in shapes model: the shape goes where a mask picture says.

The control picture is the shape's mask (white on black, RGB, in [0, 1] as diffusers' ControlNet pipelines
pass it), drawn from the same layout as the training picture (``data.random_layout``). The ControlNet
starts as ``ControlNetModel.from_unet`` of the shapes UNet (its zero convolutions make it a no-op at first);
the UNet, VAE and text encoder stay frozen. Loss: epsilon MSE on the VAE latents (encoded once), the
ControlNet's residuals added into the frozen UNet, 10% empty captions (as the base model was trained).

Every ``--check-every`` steps a quick check samples a few captions with the mask in each corner
(DDIM, CFG) and measures where the drawn shape is; training stops once it has passed ``--passes-needed``
checks in a row (after ``--min-steps``). Checkpoints: ``OUT/step-N`` (fp16 diffusers folders), the last
one that passed also as ``OUT/final``.

    HF_HUB_OFFLINE=1 nice -n 5 python tools/shapes/train_control.py --out /tmp/shapes_control
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from data import (
    IMAGE_SIZE,
    caption_for,
    color_centroid,
    draw_mask,
    draw_shape,
    nearest_color_counts,
    random_layout,
)
from train import Clock, log, lr_lambda

ROOT = Path(__file__).resolve().parents[2]
# (shape, colour, background) x corner for the progress check: size 24 blobs, 4 px from the corner
CHECK_CAPTIONS = (("circle", "red", "blue"), ("square", "yellow", "black"), ("triangle", "white", "green"))
CHECK_SIZE = 24
CORNERS = {"top-left": (4, 4), "top-right": (36, 4), "bottom-left": (4, 36), "bottom-right": (36, 36)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints inside)")
    parser.add_argument("--base", type=Path, default=ROOT / "sdflow" / "builtin" / "shapes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000, help="at most this many steps")
    parser.add_argument("--min-steps", type=int, default=500, help="no early stop before this step")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset-size", type=int, default=10000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--timesteps",
        choices=("cubic", "uniform"),
        default="cubic",
        help="cubic: t = (1 - u^3) T, favouring the noisy steps where the layout is decided (T2I-Adapter)",
    )
    parser.add_argument(
        "--hint-init",
        choices=("random", "zero"),
        default="random",
        help="the hint encoder's last convolution: random (PyTorch's default init) or zero (diffusers')",
    )
    parser.add_argument("--uncond-prob", type=float, default=0.1)
    parser.add_argument("--check-every", type=int, default=250)
    parser.add_argument("--passes-needed", type=int, default=2, help="consecutive passed checks to stop")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-cache", type=Path, default=None, help="keep the encoded data in this file")
    return parser.parse_args(argv)


def make_control_dataset(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Pictures (N, H, W, 3) uint8, their masks (N, H, W) bool and captions, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    masks = np.empty((count, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    captions = []
    for i in range(count):
        shape, color, background, size, x0, y0 = random_layout(rng)
        images[i] = np.asarray(draw_shape(shape, color, background, size, x0, y0))
        masks[i] = np.asarray(draw_mask(shape, size, x0, y0))[..., 0] > 127
        captions.append(caption_for(shape, color, background))
    return images, masks, captions


def sample_timesteps(kind: str, count: int, total: int) -> torch.Tensor:
    """``count`` training timesteps in [0, total): uniform, or cubic (most of them noisy)."""
    if kind == "uniform":
        return torch.randint(0, total, (count,))
    return ((1 - torch.rand(count) ** 3) * total).long().clamp(0, total - 1)


@torch.no_grad()
def encode(pipe: StableDiffusionPipeline, images: np.ndarray, chunk: int = 500):
    """Posterior mean and std of every picture (unscaled latents)."""
    means, stds = [], []
    for start in range(0, len(images), chunk):
        pixels = torch.from_numpy(images[start : start + chunk]).permute(0, 3, 1, 2).float() / 127.5 - 1
        posterior = pipe.vae.encode(pixels).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def text_states(pipe: StableDiffusionPipeline, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The text encoder's states of every distinct caption (row 0: the empty one), and each caption's row."""
    unique = ["", *sorted(set(captions))]
    ids = pipe.tokenizer(unique, padding="max_length", max_length=pipe.tokenizer.model_max_length).input_ids
    states = pipe.text_encoder(torch.tensor(ids))[0]
    row = {caption: i for i, caption in enumerate(unique)}
    return states, torch.tensor([row[c] for c in captions])


def in_corner(point: tuple[float, float] | None, corner: str) -> bool:
    """Whether ``point`` lies in the quarter of the picture ``corner`` names."""
    if point is None:
        return False
    half = IMAGE_SIZE / 2
    x_ok = point[0] < half if "left" in corner else point[0] >= half
    y_ok = point[1] < half if "top" in corner else point[1] >= half
    return x_ok and y_ok


@torch.no_grad()
def check(pipe: StableDiffusionPipeline, controlnet: ControlNetModel, steps: int = 15) -> dict:
    """Sample every check caption with its mask in every corner; count centroids in the right quarter."""
    controlnet.eval()
    control_pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in pipe.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet")},
        scheduler=DDIMScheduler.from_config(pipe.scheduler.config),
        controlnet=controlnet,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    control_pipe.set_progress_bar_config(disable=True)
    cases = [(c, corner) for c in CHECK_CAPTIONS for corner in CORNERS]
    prompts = [caption_for(*c) for c, _ in cases]
    masks = [draw_mask(c[0], CHECK_SIZE, *CORNERS[corner]) for c, corner in cases]
    images = control_pipe(
        prompts,
        image=masks,
        num_inference_steps=steps,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
        height=IMAGE_SIZE,
        width=IMAGE_SIZE,
    ).images
    passed, distances, colours = 0, [], 0
    for (caption, corner), image in zip(cases, images, strict=True):
        pixels = np.asarray(image)
        centroid = color_centroid(pixels, caption[1])
        passed += in_corner(centroid, corner)
        colours += set(list(nearest_color_counts(pixels))[:2]) == {caption[1], caption[2]}
        x0, y0 = CORNERS[corner]
        target = (x0 + CHECK_SIZE / 2, y0 + CHECK_SIZE / 2)
        distances.append(math.dist(centroid, target) if centroid else IMAGE_SIZE)
    controlnet.train()
    return {"passed": passed, "cases": len(cases), "colours": colours, "distance": float(np.mean(distances))}


def save(controlnet: ControlNetModel, folder: Path, note: dict) -> None:
    """The ControlNet as an fp16 safetensors diffusers folder, with ``training.json``."""
    copy.deepcopy(controlnet).to(torch.float16).save_pretrained(folder, safe_serialization=True)
    (folder / "training.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Train, checking as it goes; stop when the checks pass."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    elapsed = Clock()
    args.out.mkdir(parents=True, exist_ok=True)

    pipe = StableDiffusionPipeline.from_pretrained(args.base, torch_dtype=torch.float32)
    for module in (pipe.vae, pipe.text_encoder, pipe.unet):
        module.eval().requires_grad_(False)
    if args.data_cache is not None and args.data_cache.is_file():
        mean, std, control, states, rows = torch.load(args.data_cache)
    else:
        images, masks, captions = make_control_dataset(args.dataset_size, args.seed)
        mean, std = encode(pipe, images)
        states, rows = text_states(pipe, captions)
        control = torch.from_numpy(masks)[:, None]  # (N, 1, H, W) bool; expanded to RGB per batch
        if args.data_cache is not None:
            torch.save((mean, std, control, states, rows), args.data_cache)
    factor = pipe.vae.config.scaling_factor
    log(f"data {len(mean)} pictures, latents {tuple(mean.shape)}, elapsed {elapsed()}")

    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
    if args.hint_init == "random":
        # the output zero convolutions alone keep the ControlNet a no-op at first; with the hint encoder's
        # last convolution at zero as well, neither gets a gradient until the other has grown
        controlnet.controlnet_cond_embedding.conv_out.reset_parameters()
    controlnet.train()
    log(f"controlnet {sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f}M params")
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(100, args.steps, floor=0.2))
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    note = {key: str(value) for key, value in vars(args).items()}
    streak, running, history = 0, 0.0, []
    for step in range(1, args.steps + 1):
        index = torch.randint(len(mean), (args.batch_size,))
        clean = (mean[index] + std[index] * torch.randn_like(mean[index])) * factor
        rows_batch = rows[index].clone()
        rows_batch[torch.rand(args.batch_size) < args.uncond_prob] = 0
        hidden = states[rows_batch]
        hint = control[index].float().expand(-1, 3, -1, -1)
        noise = torch.randn_like(clean)
        total = noise_scheduler.config.num_train_timesteps
        timesteps = sample_timesteps(args.timesteps, args.batch_size, total)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        down, mid = controlnet(noisy, timesteps, hidden, controlnet_cond=hint, return_dict=False)
        prediction = pipe.unet(
            noisy,
            timesteps,
            encoder_hidden_states=hidden,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
        loss = F.mse_loss(prediction, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running += loss.item()
        if step % args.log_every == 0:
            log(f"step {step}/{args.steps} loss {running / args.log_every:.4f} elapsed {elapsed()}")
            running = 0.0
        if step % args.check_every == 0 or step == args.steps:
            result = check(pipe, controlnet)
            history.append({"step": step, **result})
            log(f"check at step {step}: {json.dumps(result)} elapsed {elapsed()}")
            seconds = round(time.monotonic() - elapsed.start)
            meta = {**note, "step": step, "check": result, "wall_seconds": seconds}
            save(controlnet, args.out / f"step-{step}", meta)
            good = result["passed"] == result["cases"]
            streak = streak + 1 if good else 0
            if good:
                shutil.rmtree(args.out / "final", ignore_errors=True)
                shutil.copytree(args.out / f"step-{step}", args.out / "final")
            if streak >= args.passes_needed and step >= args.min_steps:
                log(f"checks passed {streak} times in a row: stopping at step {step}")
                break
    (args.out / "history.json").write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")
    log(f"done, elapsed {elapsed()}")


if __name__ == "__main__":
    main()
