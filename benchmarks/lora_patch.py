"""What a LoRA costs in memory on a full-size SD 1.5 UNet and text encoder: the bytes a copy-on-write
patched model adds, against a deep copy.

    python benchmarks/lora_patch.py

The models are built from the SD 1.x configs shipped in sdflow/models/configs/sd15/ on the meta
device (no memory, no weights), so the figures are exact byte counts from the real shapes for the
three usual LoRA targets, run through the real ``patch.patched_copy``. It also checks that every
unpatched parameter of the patched model is the base's own tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sdflow.models import patch

CONFIGS = Path(__file__).resolve().parent.parent / "sdflow" / "models" / "configs" / "sd15"
ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
TARGETS = {
    "attention projections (most SD 1.5 LoRAs)": (ATTENTION, ("q_proj", "k_proj", "v_proj", "out_proj")),
    "+ feed-forward and proj_in/out (kohya 'all linear')": (
        (*ATTENTION, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"),
        ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ),
    "+ every ResNet conv (LoCon)": (
        (*ATTENTION, "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2", "conv_shortcut"),
        ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ),
}


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet" / "config.json").read_text()))
        config = CLIPTextConfig.from_dict(json.loads((CONFIGS / "text_encoder" / "config.json").read_text()))
        encoder = CLIPTextModel(config)
    return unet.half(), encoder.half()


def nbytes(params) -> int:
    return sum(p.element_size() * p.nelement() for p in params)


def added(root: torch.nn.Module, suffixes: tuple[str, ...]) -> tuple[int, int]:
    """(bytes the patched copy adds, number of patched layers)."""
    paths = [
        name
        for name, module in root.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(suffixes)
    ]
    patched = patch.patched_copy(
        root, {p: (lambda w: torch.zeros_like(w, dtype=torch.float32)) for p in paths}, 1.0
    )
    base = {id(p) for p in root.parameters()}
    own = [p for p in patched.parameters() if id(p) not in base]
    assert len(own) == len(paths)  # exactly the patched weights are new; everything else is shared
    return nbytes(own), len(paths)


def main() -> None:
    unet, encoder = models()
    total = nbytes(unet.parameters()) + nbytes(encoder.parameters())
    print(f"SD 1.5 UNet + text encoder, fp16: {total / 2**20:.0f} MiB (a deep copy adds all of it)")
    for label, (unet_targets, te_targets) in TARGETS.items():
        unet_bytes, unet_layers = added(unet, unet_targets)
        te_bytes, te_layers = added(encoder, te_targets)
        extra = unet_bytes + te_bytes
        print(
            f"{label}: {unet_layers} + {te_layers} layers, adds {extra / 2**20:.0f} MiB "
            f"({100 * extra / total:.1f}% of a deep copy)"
        )


if __name__ == "__main__":
    main()
