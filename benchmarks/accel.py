"""Training-free acceleration, measured for speed and fidelity side by side in one run.

    python benchmarks/accel.py                      # every method, 768x768 speed, 1 thread
    python benchmarks/accel.py --methods tome --size 512 --rounds 3

Speed: one UNet call with classifier-free guidance (batch 2) on a full-size SD1.5-architecture UNet
with random weights (built in memory, 860 M parameters, fp32), at ``--size`` pixels, plain and
accelerated, the two alternating for ``--rounds`` rounds after a warm-up; the speedup is the median of
the paired ratios plain / accelerated. Fidelity: a whole picture on the trained built-in ``shapes``
model at its own size, plain and accelerated, compared by SSIM (and PSNR) on the decoded pixels.

One line per method: ``METHOD speedup X.XX ssim Y.YYY``. Methods measured here: ``tome``
(TomePatchModel, ratio ``--tome-ratio``). Not yet implemented, so not printed: deepcache, tinyvae,
oneshot (see docs/speed.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from sdflow.golden.compare import psnr, ssim
from sdflow.graphs import loads
from sdflow.nodes.library.tome_patch_model import tome_unet
from sdflow.runner import Runner

FIDELITY = """
version: 1
inputs:
  ratio: {type: float, default: 0.0}
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: builtin:shapes}
  tome: {type: TomePatchModel, model: !link ckpt.model, ratio: !input ratio}
  positive: {type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle on a blue background"}
  negative: {type: CLIPEncode, clip: !link ckpt.clip, text: ""}
  empty: {type: EmptyLatent, width: 64, height: 64}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 20}
  noised: {type: AddNoise, latent: !link empty, schedule: !link schedule, seed: 1}
  denoised: {type: DenoiseLoop, model: !link tome, positive: !link positive, negative: !link negative,
             latent: !link noised, cfg: 5.0}
  decoded: {type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised}
"""


def full_size_unet() -> torch.nn.Module:
    """SD1.5's UNet architecture with random weights, in memory."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).eval()


def unet_call_seconds(unet: torch.nn.Module, size: int) -> float:
    latent = torch.randn(2, 4, size // 8, size // 8)
    text = torch.randn(2, 77, 768)
    start = time.perf_counter()
    with torch.no_grad():
        unet(latent, 500, encoder_hidden_states=text)
    return time.perf_counter() - start


def speedup(plain: torch.nn.Module, fast: torch.nn.Module, size: int, rounds: int) -> float:
    unet_call_seconds(plain, size), unet_call_seconds(fast, size)  # warm-up
    ratios = []
    for round_ in range(rounds):
        order = (plain, fast) if round_ % 2 == 0 else (fast, plain)
        seconds = {id(unet): unet_call_seconds(unet, size) for unet in order}
        ratios.append(seconds[id(plain)] / seconds[id(fast)])
        print(
            f"  round {round_ + 1}: plain {seconds[id(plain)]:.2f} s, accelerated {seconds[id(fast)]:.2f} s"
        )
    return statistics.median(ratios)


def fidelity(runner: Runner, ratio: float) -> tuple[float, float]:
    workflow = loads(FIDELITY, "accel.yaml")
    images = [
        runner.run(workflow, inputs={"ratio": r}, outputs=["decoded"])["decoded.image"].pixels.numpy()
        for r in (0.0, ratio)
    ]
    return ssim(images[0], images[1]), psnr(images[0], images[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="tome", help="comma-separated: tome")
    parser.add_argument("--size", type=int, default=768, help="pixels per side for the speed figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tome-ratio", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner = Runner(device="cpu", dtype="fp32", output_dir=os.devnull)
    lines = []
    for method in args.methods.split(","):
        if method != "tome":
            raise SystemExit(f"unknown or not yet implemented method: {method}")
        print(f"{method}: speed at {args.size}x{args.size} on a full-size random SD1.5 UNet")
        plain = full_size_unet()
        fast = tome_unet(plain, args.tome_ratio)
        ratio = speedup(plain, fast, args.size, args.rounds)
        del plain, fast
        similarity, peak = fidelity(runner, args.tome_ratio)
        print(f"  fidelity on builtin:shapes: SSIM {similarity:.4f}, PSNR {peak:.1f} dB")
        lines.append(f"{method} speedup {ratio:.2f} ssim {similarity:.3f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
