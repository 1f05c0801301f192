"""Training-free acceleration, measured for speed and fidelity side by side in one run.

    python benchmarks/accel.py                      # every method, 768x768 speed, 1 thread
    python benchmarks/accel.py --methods tome --size 512 --rounds 3

Speed: one UNet call with classifier-free guidance (batch 2) on a full-size SD1.5-architecture UNet
with random weights (built in memory, 860 M parameters, fp32), at ``--size`` pixels, plain and
accelerated, the two alternating for ``--rounds`` rounds after a warm-up; the speedup is the median of
the paired ratios plain / accelerated. Fidelity: a whole picture on the trained built-in ``shapes``
model at its own size, plain and accelerated, compared by SSIM (and PSNR) on the decoded pixels.

One line per method: ``METHOD speedup X.XX ssim Y.YYY``. Methods measured here: ``tome``
(TomePatchModel, ratio ``--tome-ratio``; speed of one call at ``--size``) and ``deepcache`` (DeepCache,
interval ``--interval``; speed of a whole ``--steps``-call loop at ``--loop-size``, as per picture),
``tinyvae`` (speed of one decode at ``--size``: SD1.5's AutoencoderKL vs a full-size TAESD, both
random; fidelity: the shapes picture's latent decoded by ``builtin:shapes-taesd`` against the shapes
VAE; measured: ``tinyvae speedup 12.98 ssim 0.881`` at 768, 13.38 at 512, PSNR 29.8 dB) and ``oneshot``
(benchmarks/oneshot.py; see docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oneshot  # benchmarks/oneshot.py, beside this file
import torch

from sdflow.golden.compare import psnr, ssim
from sdflow.graphs import loads
from sdflow.models.vae import SD_VAE_CONFIG
from sdflow.nodes.library.deep_cache import deep_cache_unet
from sdflow.nodes.library.tome_patch_model import tome_unet
from sdflow.runner import Runner

FIDELITY = """
version: 1
inputs:
  ratio: {type: float, default: 0.0}
  interval: {type: int, default: 1}
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: builtin:shapes}
  tome: {type: TomePatchModel, model: !link ckpt.model, ratio: !input ratio}
  cached: {type: DeepCache, model: !link tome, interval: !input interval}
  positive: {type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle on a blue background"}
  negative: {type: CLIPEncode, clip: !link ckpt.clip, text: ""}
  empty: {type: EmptyLatent, width: 64, height: 64}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 20}
  noised: {type: AddNoise, latent: !link empty, schedule: !link schedule, seed: 1}
  denoised: {type: DenoiseLoop, model: !link cached, positive: !link positive, negative: !link negative,
             latent: !link noised, cfg: 5.0}
  decoded: {type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised}
"""
# the same picture's latent decoded by the tiny autoencoder distilled from the shapes VAE
TINY_DECODE = """
  tiny: {type: LoadVAE, file: builtin:shapes-taesd}
  tiny_decoded: {type: VAEDecode, vae: !link tiny, latent: !link denoised}
"""


def full_size_unet() -> torch.nn.Module:
    """SD1.5's UNet architecture with random weights, in memory."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()


def unet_call_seconds(unet: torch.nn.Module, size: int, calls: int = 1) -> float:
    """Seconds for ``calls`` UNet calls with falling timesteps, as one denoising loop makes them."""
    latent = torch.randn(2, 4, size // 8, size // 8)
    text = torch.randn(2, 77, 768)
    start = time.perf_counter()
    with torch.no_grad():
        for t in torch.linspace(999, 1, calls):
            unet(latent, t, encoder_hidden_states=text)
    return time.perf_counter() - start


def speedup(plain: torch.nn.Module, fast: torch.nn.Module, size: int, rounds: int, calls: int = 1) -> float:
    return paired_speedup(
        lambda: unet_call_seconds(plain, size, calls), lambda: unet_call_seconds(fast, size, calls), rounds
    )


def paired_speedup(plain: Callable[[], float], fast: Callable[[], float], rounds: int) -> float:
    """Median over ``rounds`` of plain / fast seconds, the two alternating in order, after a warm-up."""
    plain(), fast()  # warm-up
    ratios = []
    for round_ in range(rounds):
        order = ((plain, "plain"), (fast, "fast")) if round_ % 2 == 0 else ((fast, "fast"), (plain, "plain"))
        seconds = {name: timed() for timed, name in order}
        ratios.append(seconds["plain"] / seconds["fast"])
        print(f"  round {round_ + 1}: plain {seconds['plain']:.2f} s, accelerated {seconds['fast']:.2f} s")
    return statistics.median(ratios)


def full_size_vaes() -> tuple[torch.nn.Module, torch.nn.Module]:
    """SD1.5's AutoencoderKL and a full-size TAESD (AutoencoderTiny's default config), random, in memory."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    torch.manual_seed(0)
    config = {k: v for k, v in json.loads(SD_VAE_CONFIG.read_text()).items() if not k.startswith("_")}
    return AutoencoderKL.from_config(config).eval(), AutoencoderTiny().eval()


def tiny_vae_speedup(size: int, rounds: int) -> float:
    full, tiny = full_size_vaes()
    return paired_speedup(lambda: decode_seconds(full, size), lambda: decode_seconds(tiny, size), rounds)


def decode_seconds(vae: torch.nn.Module, size: int) -> float:
    """Seconds for one decode of a ``size``-pixel picture's latent."""
    latent = torch.randn(1, 4, size // 8, size // 8)
    start = time.perf_counter()
    with torch.no_grad():
        vae.decode(latent)
    return time.perf_counter() - start


def fidelity(runner: Runner, **accelerated: float) -> tuple[float, float]:
    workflow = loads(FIDELITY, "accel.yaml")
    images = [
        runner.run(workflow, inputs=inputs, outputs=["decoded"])["decoded.image"].pixels.numpy()
        for inputs in ({}, accelerated)
    ]
    return ssim(images[0], images[1]), psnr(images[0], images[1])


def tiny_fidelity(runner: Runner) -> tuple[float, float]:
    """The plain picture decoded by the shapes VAE and by builtin:shapes-taesd, compared."""
    workflow = loads(FIDELITY + TINY_DECODE, "accel_tiny.yaml")
    result = runner.run(workflow, outputs=["decoded", "tiny_decoded"])
    full, tiny = (result[f"{node}.image"].pixels.numpy() for node in ("decoded", "tiny_decoded"))
    return ssim(full, tiny), psnr(full, tiny)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    methods = "comma-separated: tome, deepcache, tinyvae, oneshot"
    parser.add_argument("--methods", default="tome,deepcache,tinyvae", help=methods)
    parser.add_argument("--size", type=int, default=768, help="pixels per side for the speed figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tome-ratio", type=float, default=0.5)
    parser.add_argument("--interval", type=int, default=3, help="DeepCache's interval")
    parser.add_argument("--steps", type=int, default=25, help="UNet calls per picture for deepcache")
    parser.add_argument("--baseline", default="cb139e8", help="oneshot: the commit to compare with")
    parser.add_argument("--loop-size", type=int, default=256, help="pixels per side for deepcache's loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner = Runner(device="cpu", dtype="fp32", output_dir=os.devnull)
    lines = []
    for method in args.methods.split(","):
        if method == "oneshot":
            print(f"oneshot: fresh `sdflow run {oneshot.EXAMPLE}` processes, this tree vs {args.baseline}")
            figures = oneshot.measure(args.baseline, args.rounds)
            print(oneshot.describe(figures))
            lines.append(f"oneshot speedup {figures['speedup']:.2f} ssim {figures['ssim']:.3f}")
            continue
        plain = full_size_unet() if method in ("tome", "deepcache") else None
        if method == "tome":
            print(f"tome: one UNet call at {args.size}x{args.size}, full-size random SD1.5 UNet")
            ratio = speedup(plain, tome_unet(plain, args.tome_ratio), args.size, args.rounds)
            similarity, peak = fidelity(runner, ratio=args.tome_ratio)
        elif method == "deepcache":
            side = args.loop_size
            print(f"deepcache: a {args.steps}-call loop at {side}x{side}, interval {args.interval}")
            fast = deep_cache_unet(plain, args.interval, 0)
            ratio = speedup(plain, fast, args.loop_size, args.rounds, args.steps)
            similarity, peak = fidelity(runner, interval=args.interval)
        elif method == "tinyvae":
            print(f"tinyvae: one decode at {args.size}x{args.size}, random SD1.5 VAE vs full-size TAESD")
            ratio = tiny_vae_speedup(args.size, args.rounds)
            similarity, peak = tiny_fidelity(runner)
        else:
            raise SystemExit(f"unknown or not yet implemented method: {method}")
        del plain
        print(f"  fidelity on builtin:shapes: SSIM {similarity:.4f}, PSNR {peak:.1f} dB")
        lines.append(f"{method} speedup {ratio:.2f} ssim {similarity:.3f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
