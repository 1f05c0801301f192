"""Write the built-in upscale model, a tiny Compact (SRVGGNet) 2x trained to upscale as bicubic does:

    python tools/make_tiny_upscaler.py [OUT_FILE] [--steps 400] [--seed 0]

(default OUT_FILE: sdflow/builtin/tiny-upscale-2x.safetensors; needs the upscale extra, spandrel).
8 features and 2 body convolutions: a receptive field of 4 convolutions (radius 4 input pixels), a
few KB. Trained for a few seconds on one CPU thread on smooth random pictures with hard-edged blobs."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from sdflow.models.upscale import spandrel_module

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-upscale-2x.safetensors"
SIZE, SCALE, FEATURES, CONVS = 32, 2, 8, 2


def pictures(generator: torch.Generator, count: int) -> torch.Tensor:
    """Random pictures in [0, 1]: smooth colour fields plus hard-edged discs (as the shapes model draws)."""
    low = torch.rand(count, 3, 4, 4, generator=generator)
    field = F.interpolate(low, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    centre = torch.rand(count, 2, 1, 1, generator=generator) * SIZE
    radius = 3 + torch.rand(count, 1, 1, generator=generator) * SIZE / 3
    disc = ((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2 < radius**2).float()[:, None]
    colour = torch.rand(count, 3, 1, 1, generator=generator)
    return (field * (1 - disc) + colour * disc).clamp(0, 1)


def train(steps: int, seed: int) -> torch.nn.Module:
    """The Compact model after ``steps`` Adam steps towards bicubic 2x upscaling."""
    compact = spandrel_module().architectures.Compact.Compact
    torch.manual_seed(seed)
    model = compact(num_in_ch=3, num_out_ch=3, num_feat=FEATURES, num_conv=CONVS, upscale=SCALE)
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        x = pictures(generator, 16)
        target = F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False).clamp(0, 1)
        loss = F.l1_loss(model(x), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: L1 {loss.item():.4f}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = train(args.steps, args.seed)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out), metadata={"sdflow": "tiny-upscale-2x", "seed": str(args.seed)})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
