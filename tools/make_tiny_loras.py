"""Write tiny random LoRA files for a checkpoint, in the kohya/A1111 and the diffusers/PEFT formats.

The tests call these functions to make LoRAs for ``builtin:tiny-sd15`` in a temporary folder:

    python tools/make_tiny_loras.py OUT_FOLDER [--checkpoint builtin:tiny-sd15] [--rank 4] [--seed 0]

writes ``OUT_FOLDER/tiny_kohya.safetensors`` and ``OUT_FOLDER/tiny_peft.safetensors``.

kohya: attention projections, the 1x1 ``proj_in`` convs and one 3x3 resnet conv (a LoCon layer) of
the UNet, and the text encoder's attention and first MLP layers, with ``alpha = rank / 2``.
diffusers/PEFT: attention projections of both, saved by diffusers' ``save_lora_weights`` with the
adapter metadata (``lora_alpha = 2 * rank``) in the safetensors header.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET_LINEAR = ("to_q", "to_k", "to_v", "to_out.0")
TE_LINEAR = ("q_proj", "k_proj", "v_proj", "out_proj")
SCALE = 0.3  # large enough that a strength-1 LoRA visibly changes a tiny model's picture


def _targets(root: torch.nn.Module, suffixes: tuple[str, ...]) -> list[tuple[str, torch.nn.Module]]:
    return [
        (name, module)
        for name, module in root.named_modules()
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and name.endswith(suffixes)
    ]


def _pair(
    module: torch.nn.Module, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(down, up) for one layer: Linear (rank, in) / (out, rank); Conv2d with the layer's kernel."""
    weight = module.weight
    if weight.dim() == 2:
        down_shape, up_shape = (rank, weight.shape[1]), (weight.shape[0], rank)
    else:
        down_shape, up_shape = (rank, weight.shape[1], *weight.shape[2:]), (weight.shape[0], rank, 1, 1)
    down = torch.randn(down_shape, generator=generator) * SCALE
    up = torch.randn(up_shape, generator=generator) * SCALE
    return down, up


def kohya_lora(
    unet: torch.nn.Module, text_encoder: torch.nn.Module, rank: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A kohya-format state dict: ``lora_unet_*`` / ``lora_te_*`` with lora_down, lora_up and alpha."""
    generator = torch.Generator().manual_seed(seed)
    unet_layers = _targets(unet, (*UNET_LINEAR, "proj_in", "down_blocks.0.resnets.0.conv1"))
    te_layers = _targets(text_encoder, (*TE_LINEAR, "mlp.fc1"))
    tensors: dict[str, torch.Tensor] = {}
    for prefix, layers in (("lora_unet_", unet_layers), ("lora_te_", te_layers)):
        for name, module in layers:
            if prefix == "lora_te_" and not name.startswith("text_model."):
                name = "text_model." + name  # kohya's names come from transformers' CLIPTextModel of 4.x
            stem = prefix + name.replace(".", "_")
            down, up = _pair(module, rank, generator)
            tensors[f"{stem}.lora_down.weight"] = down
            tensors[f"{stem}.lora_up.weight"] = up
            tensors[f"{stem}.alpha"] = torch.tensor(rank / 2)
    return tensors


def write_kohya(
    path: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, rank: int, seed: int
) -> Path:
    save_file(
        kohya_lora(unet, text_encoder, rank, seed), str(path), metadata={"ss_network_module": "networks.lora"}
    )
    return path


def write_peft(
    folder: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module, rank: int, seed: int
) -> Path:
    """diffusers' own save_lora_weights of PEFT-named layers, with adapter metadata (lora_alpha)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    metadata: dict[str, dict] = {}
    for target, root, suffixes in (("unet", unet, UNET_LINEAR), ("text_encoder", text_encoder, TE_LINEAR)):
        state: dict[str, torch.Tensor] = {}
        for name, module in _targets(root, suffixes):
            state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"] = _pair(module, rank, generator)
        layers[target] = state
        config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(suffixes))
        metadata[target] = {k: list(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    StableDiffusionPipeline.save_lora_weights(
        str(folder),
        unet_lora_layers=layers["unet"],
        text_encoder_lora_layers=layers["text_encoder"],
        weight_name="tiny_peft.safetensors",
        unet_lora_adapter_metadata=metadata["unet"],
        text_encoder_lora_adapter_metadata=metadata["text_encoder"],
    )
    return folder / "tiny_peft.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default="builtin:tiny-sd15")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from diffusers import StableDiffusionPipeline

    from sdflow.models import checkpoints

    pipe = StableDiffusionPipeline.from_pretrained(str(checkpoints.resolve(args.checkpoint).path))
    args.out.mkdir(parents=True, exist_ok=True)
    kohya = args.out / "tiny_kohya.safetensors"
    print(write_kohya(kohya, pipe.unet, pipe.text_encoder, args.rank, args.seed))
    print(write_peft(args.out, pipe.unet, pipe.text_encoder, args.rank, args.seed + 1))


if __name__ == "__main__":
    main()
