"""Write tiny random LoRA files for a checkpoint: kohya/A1111, diffusers/PEFT, LyCORIS LoHa and LoKr.

The tests call these functions to make LoRAs for ``builtin:tiny-sd15`` and ``builtin:tiny-sdxl`` in
a temporary folder:

    python tools/make_tiny_loras.py OUT_FOLDER [--checkpoint builtin:tiny-sd15] [--rank 4] [--seed 0]

writes ``OUT_FOLDER/tiny_kohya.safetensors``, ``tiny_peft.safetensors``, ``tiny_loha.safetensors``
and ``tiny_lokr.safetensors``.

kohya: attention projections, the ``proj_in`` layers and one 3x3 resnet conv (a LoCon layer) of
the UNet, and the text encoders' attention and first MLP layers, with ``alpha = rank / 2``. For SDXL
(a second text encoder given) as kohya's SDXL trainer writes them: ``lora_te1_`` / ``lora_te2_`` and
the UNet layers by their original LDM names (``lora_unet_input_blocks_1_0_in_layers_2``).
diffusers/PEFT: attention projections of each, saved by diffusers' ``save_lora_weights`` with the
adapter metadata (``lora_alpha = 2 * rank``; ``3 * rank`` for SDXL's second text encoder) in the
safetensors header.
LoHa / LoKr: the kohya layers above with LyCORIS keys (``hada_w1_a`` ... / ``lokr_w1`` ...), conv
updates flat as LyCORIS writes them (a LoKr ``w2`` kept whole is a 4-D kernel); LoKr's factors either
whole or low-rank pairs (``w1`` of rank ``rank // 2``, ``w2`` of ``rank``), as asked.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdflow.models.ldm_keys import unet_mapping

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


def _loha(
    module: torch.nn.Module, rank: int, generator: torch.Generator, stem: str
) -> dict[str, torch.Tensor]:
    """LoHa keys for one layer: two (out, rank) @ (rank, in * kernel) pairs."""
    out, columns = module.weight.shape[0], math.prod(module.weight.shape[1:])
    shapes = {"hada_w1_a": (out, rank), "hada_w1_b": (rank, columns)}
    shapes |= {"hada_w2_a": (out, rank), "hada_w2_b": (rank, columns)}
    return {
        f"{stem}.{role}": torch.randn(shape, generator=generator) * 2 * SCALE
        for role, shape in shapes.items()
    }


def _split(size: int) -> tuple[int, int]:
    """``size`` as (small, large) factors, the small one the largest divisor up to its square root."""
    small = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    return small, size // small


def _lokr(
    module: torch.nn.Module, rank: int, generator: torch.Generator, stem: str, factored: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """LoKr keys for one layer: ``w1`` (out1, in1) and ``w2`` (out2, in2[, kh, kw]), each whole or, when
    named in ``factored``, a low-rank pair (``w2``'s conv columns flat)."""
    (out1, out2), (in1, in2) = _split(module.weight.shape[0]), _split(module.weight.shape[1])
    kernel = tuple(module.weight.shape[2:])
    tensors: dict[str, torch.Tensor] = {}
    for factor, (rows, columns, dims, pair_rank) in {
        "w1": (out1, in1, (), max(1, rank // 2)),
        "w2": (out2, in2, kernel, rank),
    }.items():
        if factor in factored:
            shapes = {"a": (rows, pair_rank), "b": (pair_rank, columns * math.prod(dims))}
            for part, shape in shapes.items():
                tensors[f"{stem}.lokr_{factor}_{part}"] = torch.randn(shape, generator=generator) * SCALE
        else:
            tensors[f"{stem}.lokr_{factor}"] = (
                torch.randn((rows, columns, *dims), generator=generator) * SCALE
            )
    return tensors


def _kohya_layers(
    unet: torch.nn.Module, text_encoder: torch.nn.Module | None, text_encoder_2: torch.nn.Module | None
) -> list[tuple[str, torch.nn.Module]]:
    """(kohya key stem, module) of each layer the tiny kohya-named files update."""
    sdxl = text_encoder_2 is not None
    to_ldm = unet_mapping(dict(unet.config), prefix="") if sdxl else None
    groups = [("lora_unet_", _targets(unet, (*UNET_LINEAR, "proj_in", "down_blocks.0.resnets.0.conv1")))]
    encoders = (
        (("lora_te1_", text_encoder), ("lora_te2_", text_encoder_2))
        if sdxl
        else (("lora_te_", text_encoder),)
    )
    groups += [
        (prefix, _targets(root, (*TE_LINEAR, "mlp.fc1"))) for prefix, root in encoders if root is not None
    ]
    stems = []
    for prefix, layers in groups:
        for name, module in layers:
            if prefix.startswith("lora_te") and not name.startswith("text_model."):
                name = "text_model." + name  # kohya's names come from transformers' CLIPTextModel of 4.x
            elif to_ldm is not None and prefix == "lora_unet_":
                name = to_ldm(name + ".weight").key.removesuffix(".weight")  # kohya's SDXL UNet is SGM's
            stems.append((prefix + name.replace(".", "_"), module))
    return stems


def _kohya_file(
    layer: Callable[[torch.nn.Module, torch.Generator, str], dict[str, torch.Tensor]],
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int,
    seed: int,
    text_encoder_2: torch.nn.Module | None,
) -> dict[str, torch.Tensor]:
    """``layer``'s keys for each kohya-named layer, with ``alpha = rank / 2``."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for stem, module in _kohya_layers(unet, text_encoder, text_encoder_2):
        tensors |= layer(module, generator, stem)
        tensors[f"{stem}.alpha"] = torch.tensor(rank / 2)
    return tensors


def kohya_lora(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int = 4,
    seed: int = 0,
    text_encoder_2: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """A kohya-format state dict with lora_down, lora_up and alpha: ``lora_unet_*`` / ``lora_te_*``, or
    with ``text_encoder_2`` (SDXL; ``text_encoder`` None for the refiner) ``lora_unet_<LDM name>``,
    ``lora_te1_*`` and ``lora_te2_*``."""

    def layer(module: torch.nn.Module, generator: torch.Generator, stem: str) -> dict[str, torch.Tensor]:
        down, up = _pair(module, rank, generator)
        return {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up}

    return _kohya_file(layer, unet, text_encoder, rank, seed, text_encoder_2)


def kohya_loha(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int = 4,
    seed: int = 0,
    text_encoder_2: torch.nn.Module | None = None,
) -> dict[str, torch.Tensor]:
    """A LyCORIS LoHa state dict (hada_w1_a/b, hada_w2_a/b, alpha) for kohya_lora's layers."""
    return _kohya_file(
        lambda module, generator, stem: _loha(module, rank, generator, stem),
        unet,
        text_encoder,
        rank,
        seed,
        text_encoder_2,
    )


def kohya_lokr(
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int = 4,
    seed: int = 0,
    text_encoder_2: torch.nn.Module | None = None,
    factored: tuple[str, ...] = ("w2",),
) -> dict[str, torch.Tensor]:
    """A LyCORIS LoKr state dict (lokr_w1[_a/_b], lokr_w2[_a/_b], alpha) for kohya_lora's layers, the
    factors named in ``factored`` ("w1", "w2") as low-rank pairs."""
    return _kohya_file(
        lambda module, generator, stem: _lokr(module, rank, generator, stem, factored),
        unet,
        text_encoder,
        rank,
        seed,
        text_encoder_2,
    )


def write_kohya(
    path: Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int,
    seed: int,
    text_encoder_2: torch.nn.Module | None = None,
) -> Path:
    tensors = kohya_lora(unet, text_encoder, rank, seed, text_encoder_2)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora"})
    return path


def write_lycoris(
    path: Path,
    kind: str,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int,
    seed: int,
    text_encoder_2: torch.nn.Module | None = None,
    factored: tuple[str, ...] = ("w2",),
) -> Path:
    """A LoHa (``kind`` "loha") or LoKr ("lokr", ``factored`` as kohya_lokr's) file, kohya-named."""
    if kind == "loha":
        tensors = kohya_loha(unet, text_encoder, rank, seed, text_encoder_2)
    else:
        tensors = kohya_lokr(unet, text_encoder, rank, seed, text_encoder_2, factored)
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya"})
    return path


def write_peft(
    folder: Path,
    unet: torch.nn.Module,
    text_encoder: torch.nn.Module | None,
    rank: int,
    seed: int,
    text_encoder_2: torch.nn.Module | None = None,
) -> Path:
    """diffusers' own save_lora_weights of PEFT-named layers, with adapter metadata (lora_alpha); with
    ``text_encoder_2``, StableDiffusionXLPipeline's, which adds the ``text_encoder_2.`` layers."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft import LoraConfig

    generator = torch.Generator().manual_seed(seed)
    targets = [("unet", unet, UNET_LINEAR, 2 * rank), ("text_encoder", text_encoder, TE_LINEAR, 2 * rank)]
    if text_encoder_2 is not None:
        targets.append(("text_encoder_2", text_encoder_2, TE_LINEAR, 3 * rank))
    arguments: dict[str, dict] = {}
    for target, root, suffixes, alpha in targets:
        if root is None:
            continue
        state: dict[str, torch.Tensor] = {}
        for name, module in _targets(root, suffixes):
            state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"] = _pair(module, rank, generator)
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(suffixes))
        arguments[f"{target}_lora_layers"] = state
        arguments[f"{target}_lora_adapter_metadata"] = {
            k: list(v) if isinstance(v, set) else v for k, v in config.to_dict().items()
        }
    saver = StableDiffusionPipeline if text_encoder_2 is None else StableDiffusionXLPipeline
    saver.save_lora_weights(str(folder), weight_name="tiny_peft.safetensors", **arguments)
    return folder / "tiny_peft.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", default="builtin:tiny-sd15")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from diffusers import DiffusionPipeline

    from sdflow.models import resolver

    pipe = DiffusionPipeline.from_pretrained(str(resolver.checkpoint(args.checkpoint).path))
    encoders = (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None))
    args.out.mkdir(parents=True, exist_ok=True)
    kohya = args.out / "tiny_kohya.safetensors"
    print(write_kohya(kohya, pipe.unet, encoders[0], args.rank, args.seed, encoders[1]))
    print(write_peft(args.out, pipe.unet, encoders[0], args.rank, args.seed + 1, encoders[1]))
    for offset, kind in enumerate(("loha", "lokr"), start=2):
        path = args.out / f"tiny_{kind}.safetensors"
        print(write_lycoris(path, kind, pipe.unet, encoders[0], args.rank, args.seed + offset, encoders[1]))


if __name__ == "__main__":
    main()
