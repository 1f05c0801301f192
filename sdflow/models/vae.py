"""Loading a VAE on its own: a single file (original LDM layout, like sd-vae-ft-mse, or diffusers
layout), a diffusers folder (AutoencoderKL, ConsistencyDecoderVAE or AutoencoderTiny), or a TAESD
encoder/decoder file pair (``taesd``).

A single file is read as single-file checkpoints are (``singlefile``: built empty, each weight read
once from the file into place). It carries no config: its shapes give the widths, depths and
channels; what shapes cannot tell (group-norm groups, latent scaling factor 0.18215, fp16 upcasting)
comes from the SD 1.x VAE config shipped in ``configs/sd15/vae/config.json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from sdflow.models import taesd, weights

CONFIGS = Path(__file__).resolve().parent / "configs"
SD_VAE_CONFIG = CONFIGS / "sd15" / "vae" / "config.json"
LATENT_16 = 16  # SD3's and Flux's VAEs (their configs in configs/sd3, configs/flux)
CLASSES = ("AutoencoderKL", "ConsistencyDecoderVAE", "AutoencoderTiny")
# prefixes a VAE carries inside a full checkpoint (LDM) or a diffusers pipeline file
_PREFIXES = ("first_stage_model.", "vae.")


class VaeError(ValueError):
    """The file or folder is not a VAE we can load."""


def load(
    path: Path,
    device: torch.device,
    dtype: torch.dtype,
    allow_pickle: bool = False,
    config: Path | None = None,
    latent_format: str = "flux",
) -> torch.nn.Module:
    """The VAE at ``path`` (file or folder), on ``device``, in ``dtype`` unless its config asks for
    fp32 under fp16 (``force_upcast``), as LoadCheckpoint does. For a single file, ``config`` (a
    diffusers folder or VAE folder) gives the config instead of its shapes; a 16-channel VAE's latent
    scaling and shift (not in its shapes) are SD3's or Flux's by ``latent_format``."""
    if path.is_dir():
        vae = _from_folder(path, dtype)
    elif _is_tiny(path, allow_pickle):
        try:
            vae = taesd.load_files(path, dtype, allow_pickle)
        except taesd.TinyVaeError as exc:
            raise VaeError(str(exc)) from None
    else:
        vae = _from_file(path, dtype, allow_pickle, config, latent_format)
    return vae.to(device).eval().requires_grad_(False)


def _is_tiny(path: Path, allow_pickle: bool) -> bool:
    """Whether the file is half of a TAESD (original layout, as in ComfyUI's vae_approx folder)."""
    with weights.WeightReader(path, allow_pickle) as reader:
        return taesd.is_tiny_file(reader.shapes)


def _dtype(config: dict, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype == torch.float16 and config.get("force_upcast", False) else dtype


def source(path: Path) -> Path:
    """What ``load`` reads for ``path``: the file, the VAE folder, or a pipeline folder's ``vae/``."""
    return path / "vae" if path.is_dir() and (path / "model_index.json").is_file() else path


def _from_folder(path: Path, dtype: torch.dtype) -> torch.nn.Module:
    import diffusers

    folder = source(path)
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


def _given_config(folder: Path) -> dict:
    """The VAE config of a diffusers pipeline folder or VAE folder."""
    file = source(folder) / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VaeError(f"cannot read the VAE config {file}: {exc}") from None


def _from_file(
    path: Path, dtype: torch.dtype, allow_pickle: bool, given: Path | None = None, latent_format: str = "flux"
) -> torch.nn.Module:
    """Build the AutoencoderKL empty and read each weight straight from the file into it (once)."""
    from diffusers import AutoencoderKL

    from sdflow.models import module_fill
    from sdflow.models.ldm_keys import Source, vae_mapping

    with weights.WeightReader(path, allow_pickle) as reader:
        prefix = _prefix(reader.shapes)
        shapes = {k[len(prefix) :]: v for k, v in reader.shapes.items() if k.startswith(prefix)}
        if any(k.startswith("encoder.down_blocks.") for k in shapes):
            ldm = False
        elif any(k.startswith("encoder.down.") for k in shapes):
            ldm = True
        else:
            sample = ", ".join(list(reader.shapes)[:3]) or "no tensors"
            raise VaeError(
                f"not a VAE: expected encoder.*/decoder.* weights in the LDM layout (encoder.down.0...) "
                f"or the diffusers layout (encoder.down_blocks.0...); found {sample}..."
            )
        try:
            config = _given_config(given) if given is not None else config_from_shapes(shapes, ldm)
        except KeyError as exc:
            raise VaeError(f"not a complete VAE: no {exc.args[0]} in it") from None
        if given is None and config["latent_channels"] == LATENT_16:  # SD3's / Flux's latent space
            family_config = json.loads((CONFIGS / latent_format / "vae" / "config.json").read_text())
            config |= {k: family_config[k] for k in ("scaling_factor", "shift_factor", "force_upcast")}
        vae = module_fill.build_empty(AutoencoderKL.from_config, config)
        mapping = vae_mapping(config, prefix) if ldm else (lambda name: Source(prefix + name))
        try:
            module_fill.fill_weights(vae, mapping, reader, _dtype(config, dtype), torch.device("cpu"), "VAE")
        except module_fill.ArchitectureMismatch as exc:
            raise VaeError(str(exc).split(". The file may be")[0]) from None
    return vae


def _prefix(shapes: dict[str, tuple[int, ...]]) -> str:
    """The prefix of the VAE's weights: a whole checkpoint keeps them under ``first_stage_model.``."""
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "encoder.") for k in shapes):
            return prefix
    return ""


def config_from_shapes(shapes: dict[str, tuple[int, ...]], ldm: bool) -> dict:
    """An AutoencoderKL config fitting the weights' shapes, the rest from the SD VAE config."""
    config = json.loads(SD_VAE_CONFIG.read_text(encoding="utf-8"))
    block, resnet = ("down", "block") if ldm else ("down_blocks", "resnets")
    levels = _indices(shapes, rf"encoder\.{block}\.(\d+)\.")
    widths = [int(shapes[f"encoder.{block}.{i}.{resnet}.0.conv1.weight"][0]) for i in levels]
    config["block_out_channels"] = widths
    config["down_block_types"] = ["DownEncoderBlock2D"] * len(widths)
    config["up_block_types"] = ["UpDecoderBlock2D"] * len(widths)
    config["layers_per_block"] = len(_indices(shapes, rf"encoder\.{block}\.0\.{resnet}\.(\d+)\."))
    config["in_channels"] = int(shapes["encoder.conv_in.weight"][1])
    config["out_channels"] = int(shapes["decoder.conv_out.weight"][0])
    config["latent_channels"] = int(shapes["decoder.conv_in.weight"][1])
    config["use_quant_conv"] = "quant_conv.weight" in shapes
    config["use_post_quant_conv"] = "post_quant_conv.weight" in shapes
    attention = "encoder.mid.attn_1.q.weight" if ldm else "encoder.mid_block.attentions.0.to_q.weight"
    config["mid_block_add_attention"] = attention in shapes
    return config


def _indices(shapes: dict[str, tuple[int, ...]], pattern: str) -> list[int]:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    return sorted(found)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])[:400]
