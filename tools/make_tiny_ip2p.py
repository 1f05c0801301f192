"""A tiny random InstructPix2Pix checkpoint (a StableDiffusionInstructPix2PixPipeline folder) from the
built-in tiny-sd15: its components, with a UNet reading 8 channels (latent + image latent).

The first 4 input channels keep tiny-sd15's weights; the 4 image-latent channels are drawn from a
seeded CPU generator (not zero, so the image matters), which is stable across library releases.

    python tools/make_tiny_ip2p.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

TINY_SD15 = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15"
SEED = 2300
IMAGE_CHANNELS = 4


def tiny_ip2p_unet() -> torch.nn.Module:
    """tiny-sd15's UNet with ``IMAGE_CHANNELS`` more random input channels."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(TINY_SD15 / "unet")
    config = {**base.config, "in_channels": base.config.in_channels + IMAGE_CHANNELS}
    unet = UNet2DConditionModel.from_config(config)
    state = base.state_dict()
    weight = state["conv_in.weight"]
    generator = torch.Generator().manual_seed(SEED)
    extra = torch.randn((weight.shape[0], IMAGE_CHANNELS, *weight.shape[2:]), generator=generator)
    state["conv_in.weight"] = torch.cat([weight, extra * weight.std()], dim=1)
    unet.load_state_dict(state)
    return unet.eval()


def make(out: Path) -> Path:
    """Write the folder to ``out``; returns it."""
    from diffusers import StableDiffusionInstructPix2PixPipeline, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(TINY_SD15, local_files_only=True)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=tiny_ip2p_unet(),
        scheduler=base.scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out)
    return out


if __name__ == "__main__":
    make(Path(sys.argv[1]))
