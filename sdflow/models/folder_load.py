"""Loading a diffusers folder's models straight from their safetensors files, memory-mapped.

``from_pretrained`` keeps a component's whole mapped file while it converts, so an fp16 folder loaded
in fp32 peaks at the model plus the file's pages. Here each weight is converted from the mapping into
its final tensor and the pages it came from are released at once (``WeightReader``), as for single
files. A component this cannot take as it is (no single ``.safetensors`` file, sharded or pickled
weights, weights missing under the module's names, as in legacy layouts diffusers renames on load)
returns None, and the caller uses ``from_pretrained``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdflow.models.ldm_keys import Mapping, Source, clip_mapping
from sdflow.models.module_fill import ArchitectureMismatch, build_empty, fill_weights
from sdflow.models.weights import WeightFileError, WeightReader

_WEIGHTS = {"diffusers": "diffusion_pytorch_model.safetensors", "transformers": "model.safetensors"}


def _same(shapes: dict[str, tuple[int, ...]]) -> Mapping:
    return Source


def _clip(shapes: dict[str, tuple[int, ...]]) -> Mapping:
    """transformers' module names may lack the files' ``text_model.`` level (or the files may)."""
    return clip_mapping("", shapes)


def mapped(
    folder: Path, factory: Any, config: Any, weights: str, dtype: torch.dtype, device: torch.device
) -> torch.nn.Module | None:
    """``factory(config)`` filled from ``folder/<weights file>``, or None when it cannot be (the
    caller falls back to ``from_pretrained``, which reports what is wrong)."""
    path = folder / _WEIGHTS[weights]
    if not path.is_file():
        return None
    module = build_empty(factory, config)
    names = _clip if weights == "transformers" else _same
    try:
        with WeightReader(path) as reader:
            fill_weights(module, names(reader.shapes), reader, dtype, device, folder.name)
    except (ArchitectureMismatch, WeightFileError, OSError):
        return None
    return module


def vae(folder: Path, config: dict[str, Any], dtype: torch.dtype, device: torch.device) -> Any:
    from diffusers import AutoencoderKL

    return mapped(folder, AutoencoderKL.from_config, config, "diffusers", dtype, device)


def text_encoder(folder: Path, cls: type, dtype: torch.dtype, device: torch.device) -> Any:
    config = cls.config_class.from_pretrained(folder)
    return mapped(folder, cls, config, "transformers", dtype, device)
