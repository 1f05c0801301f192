"""Loading a VAE on its own: a single file (original LDM layout, like sd-vae-ft-mse, or diffusers
layout) or a diffusers folder (AutoencoderKL or ConsistencyDecoderVAE).

A single file carries no config. Its shapes give the widths, depths and channels; what shapes cannot
tell (group-norm groups, latent scaling factor 0.18215, fp16 upcasting) comes from the SD 1.x/2.x VAE
config shipped in ``configs/sd_vae.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from sdflow.models import weightfile

SD_VAE_CONFIG = Path(__file__).resolve().parent / "configs" / "sd_vae.json"
CLASSES = ("AutoencoderKL", "ConsistencyDecoderVAE")
# prefixes a VAE carries inside a full checkpoint (LDM) or a diffusers pipeline file
_PREFIXES = ("first_stage_model.", "vae.")


class VaeError(ValueError):
    """The file or folder is not a VAE we can load."""


def load(path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> torch.nn.Module:
    """The VAE at ``path`` (file or folder), on ``device``, in ``dtype`` unless its config asks for
    fp32 under fp16 (``force_upcast``), as LoadCheckpoint does."""
    vae = _from_folder(path, dtype) if path.is_dir() else _from_file(path, dtype, allow_pickle)
    return vae.to(device).eval().requires_grad_(False)


def _dtype(config: dict, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast", False) else dtype


def _from_folder(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers

    folder = path / "vae" if (path / "model_index.json").is_file() else path
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise VaeError(f"{folder} is not a diffusers VAE folder (no config.json in it)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaeError(f"cannot read {config_file}: {exc}") from None
    class_name = config.get("_class_name")
    if class_name not in CLASSES:
        raise VaeError(f"{config_file} describes a {class_name}, not a VAE ({' or '.join(CLASSES)})")
    model_class = getattr(diffusers, class_name)
    dtype = _dtype(config, dtype)
    try:
        return model_class.from_pretrained(str(folder), torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise VaeError(f"cannot load the VAE in {folder}: {_first_line(exc)}") from None


def _from_file(path: Path, dtype: torch.dtype, allow_pickle: bool) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    tensors, _ = weightfile.read(path, allow_pickle)
    tensors = _strip_prefix(tensors)
    if any(k.startswith("encoder.down_blocks.") for k in tensors):
        state = tensors
    elif any(k.startswith("encoder.down.") for k in tensors):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(tensors, _config(tensors, ldm=True))
    else:
        sample = ", ".join(list(tensors)[:3]) or "no tensors"
        raise VaeError(
            f"not a VAE: expected encoder.*/decoder.* weights in the LDM layout (encoder.down.0...) or "
            f"the diffusers layout (encoder.down_blocks.0...); found {sample}..."
        )
    config = _config(state, ldm=False)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    dtype = _dtype(config, dtype)
    try:
        vae.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as exc:
        raise VaeError(f"the weights do not form an SD VAE: {_first_line(exc)}") from None
    return vae


def _config(tensors: dict[str, torch.Tensor], ldm: bool) -> dict:
    try:
        return config_from_shapes(tensors, ldm)
    except KeyError as exc:
        raise VaeError(f"not a complete VAE: no {exc.args[0]} in it") from None


def _strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The VAE's own weights when the file is a whole checkpoint (or keeps a ``vae.`` prefix)."""
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def config_from_shapes(tensors: dict[str, torch.Tensor], ldm: bool) -> dict:
    """An AutoencoderKL config fitting the weights' shapes, the rest from the SD VAE config."""
    config = json.loads(SD_VAE_CONFIG.read_text(encoding="utf-8"))
    block, resnet = ("down", "block") if ldm else ("down_blocks", "resnets")
    levels = _indices(tensors, rf"encoder\.{block}\.(\d+)\.")
    if not levels:
        raise VaeError("not a VAE: no encoder down blocks")
    widths = [int(tensors[f"encoder.{block}.{i}.{resnet}.0.conv1.weight"].shape[0]) for i in levels]
    config["block_out_channels"] = widths
    config["down_block_types"] = ["DownEncoderBlock2D"] * len(widths)
    config["up_block_types"] = ["UpDecoderBlock2D"] * len(widths)
    config["layers_per_block"] = len(_indices(tensors, rf"encoder\.{block}\.0\.{resnet}\.(\d+)\."))
    config["in_channels"] = int(tensors["encoder.conv_in.weight"].shape[1])
    config["out_channels"] = int(tensors["decoder.conv_out.weight"].shape[0])
    config["latent_channels"] = int(tensors["decoder.conv_in.weight"].shape[1])
    config["use_quant_conv"] = "quant_conv.weight" in tensors
    config["use_post_quant_conv"] = "post_quant_conv.weight" in tensors
    attention = "encoder.mid.attn_1.q.weight" if ldm else "encoder.mid_block.attentions.0.to_q.weight"
    config["mid_block_add_attention"] = attention in tensors
    return config


def _indices(tensors: dict[str, torch.Tensor], pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in tensors if (m := re.match(pattern, k))}
    return sorted(found)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])[:400]
