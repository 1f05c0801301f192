"""All-in-one SD3 / Flux single files (ComfyUI's and Stability's: transformer, text encoders and VAE in
one file) through LoadCheckpoint, and the 16-channel VAE configs.

The transformer loads as ``dit_load`` reads it, the text encoders as ``split_load`` reads separate
files (the parts found under ``text_encoders.<name>.transformer.``), the VAE from
``first_stage_model.*`` with the family's VAE config (the user's diffusers folder, else the one
shipped in ``configs/<family>/vae``: SD3's and Flux's latent scaling and shift differ, not their
shapes).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch

from sdflow.models import dit_load, split_load
from sdflow.models.dit_detect import Parts, find_parts
from sdflow.models.families import FAMILIES, Family
from sdflow.models.ldm_keys import vae_mapping
from sdflow.models.loaded import LoadedCheckpoint, LoadOptions
from sdflow.models.module_fill import build_empty, fill_weights
from sdflow.models.weights import WeightReader, read_header


def parts_of(path: Path) -> Parts | None:
    """What a safetensors file holds when it holds an SD3 / Flux transformer (None otherwise),
    remembered while its size and mtime stay the same."""
    stat = path.stat()
    return _parts(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _parts(path: str, size: int, mtime_ns: int) -> Parts | None:
    parts = find_parts(read_header(Path(path)).shapes())
    return parts if parts.transformer is not None else None


def family_of(path: Path) -> Family | None:
    """The family of a file holding an SD3 / Flux transformer, None for any other file."""
    parts = parts_of(path)
    return FAMILIES[parts.transformer.family] if parts is not None else None


def vae_config(family: Family, config: Path | None) -> dict[str, Any]:
    return split_load.read_json((config or split_load.config_root(family)) / "vae" / "config.json")


def load_vae(
    path: Path, prefix: str, family: Family, device: torch.device, dtype: torch.dtype, config: Path | None
) -> torch.nn.Module:
    """The 16-channel VAE under ``prefix`` in ``path`` (fp32 under fp16 when its config asks)."""
    from diffusers import AutoencoderKL

    settings = vae_config(family, config)
    vae = build_empty(AutoencoderKL.from_config, settings)
    vae_dtype = torch.float32 if dtype == torch.float16 and settings.get("force_upcast") else dtype
    with WeightReader(path) as reader:
        fill_weights(vae, vae_mapping(settings, prefix), reader, vae_dtype, device, f"VAE ({path.name})")
    return vae


def load(path: Path, device: torch.device, dtype: torch.dtype, options: LoadOptions) -> LoadedCheckpoint:
    """Every part of an all-in-one SD3 / Flux file (SplitLoadError naming a part it lacks)."""
    parts = parts_of(path)
    if parts is None or not parts.all_in_one:
        what = parts.label() if parts is not None else "no SD3 / Flux transformer"
        raise split_load.SplitLoadError(
            f"'{path.name}' is not an all-in-one checkpoint ({what}): load its transformer with "
            "LoadDiffusionModel and its text encoders with LoadTextEncoders"
        )
    found = parts.transformer
    family = FAMILIES[found.family]
    transformer = dit_load.load_transformer(path, device, dtype, "default", options.config)
    encoders, tokenizers = split_load.load_text_encoders(
        [path], family, device, dtype, options.config, parts=[list(parts.text_encoders)]
    )
    vae = load_vae(path, parts.vae_prefix or "", family, device, dtype, options.config)
    schedule = split_load.scheduler_config(family, options.config, found.variant)
    return LoadedCheckpoint(
        family.denoiser(transformer.module),
        vae.eval().requires_grad_(False),
        encoders[0],
        tokenizers[0],
        schedule,
        family,
        encoders[1:],
        tokenizers[1:],
    )
