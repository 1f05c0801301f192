"""Write tiny random VAEs in every form LoadVAE reads, for tests:

    python tools/make_tiny_vaes.py OUT_FOLDER [--seed 0]

writes ``tiny_vae_ldm.safetensors`` (original LDM layout, like sd-vae-ft-mse),
``tiny_vae_diffusers.safetensors`` (diffusers layout), ``tiny_vae/`` (a diffusers AutoencoderKL
folder) and ``tiny_consistency/`` (a diffusers ConsistencyDecoderVAE folder). The AutoencoderKL has the
SD VAE's 32 norm groups and 8x scale (so it decodes tiny-sd15's latents) at 32 channels a level.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY_KL = {
    "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 64,
}
TINY_CONSISTENCY = {
    "encoder_block_out_channels": [16, 16, 16, 16],
    "encoder_layers_per_block": 1,
    "encoder_norm_num_groups": 8,
    "decoder_block_out_channels": [16, 32],
    "decoder_down_block_types": ["ResnetDownsampleBlock2D"] * 2,
    "decoder_up_block_types": ["ResnetUpsampleBlock2D"] * 2,
    "decoder_layers_per_block": 1,
    "decoder_norm_num_groups": 8,
    "sample_size": 64,
}


def tiny_autoencoder(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_KL).eval()


def tiny_consistency_decoder(seed: int = 0):
    from diffusers import ConsistencyDecoderVAE

    torch.manual_seed(seed)
    return ConsistencyDecoderVAE(**TINY_CONSISTENCY).eval()


# diffusers -> LDM renames for an AutoencoderKL, applied in order to each key
_TO_LDM = [
    (r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.mid.attn_1."),
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.attn_1\.group_norm\.", ".attn_1.norm."),
    (r"\.attn_1\.to_([qkv])\.", r".attn_1.\1."),
    (r"\.attn_1\.to_out\.0\.", ".attn_1.proj_out."),
]


def to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """An AutoencoderKL state dict in the original LDM layout (decoder levels reversed, attention
    projections as 1x1 convs)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = key
        match = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers\.0)\.", new)
        if match:
            level = levels - 1 - int(match[1])
            part = "block" if match[2] == "resnets" else "upsample"
            new = f"decoder.up.{level}.{part}." + new[match.end() :]
        for pattern, replacement in _TO_LDM:
            new = re.sub(pattern, replacement, new)
        if re.search(r"\.attn_1\.(q|k|v|proj_out)\.weight$", new):
            value = value[:, :, None, None]
        out[new] = value.contiguous()
    return out


def write_all(folder: Path, seed: int = 0) -> dict[str, Path]:
    """Every form, in ``folder``; returns their paths by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    vae = tiny_autoencoder(seed)
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    paths = {
        "ldm": folder / "tiny_vae_ldm.safetensors",
        "diffusers_file": folder / "tiny_vae_diffusers.safetensors",
        "folder": folder / "tiny_vae",
        "consistency": folder / "tiny_consistency",
    }
    save_file(to_ldm(state, len(TINY_KL["block_out_channels"])), str(paths["ldm"]))
    save_file(state, str(paths["diffusers_file"]))
    vae.save_pretrained(str(paths["folder"]))
    tiny_consistency_decoder(seed + 1).save_pretrained(str(paths["consistency"]))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_all(args.out, args.seed).values():
        print(path)


if __name__ == "__main__":
    main()
