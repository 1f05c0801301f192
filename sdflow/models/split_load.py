"""ComfyUI's split layout for SD3 / Flux: text encoder files (clip_l, clip_g, t5xxl) loaded into a
family's encoder slots, and the configs a transformer file alone does not carry.

Each file's encoders are told from their keys (``dit_detect``): T5 goes to the family's T5 slot,
each CLIP to the CLIP slot of its width. Configs come from a diffusers folder the user names
(``config``), else the full-size ones shipped in ``configs/<family>/``. Tokenizers: the folder's,
else the CLIP tokenizers shipped for SDXL (the same CLIP-L / bigG vocabulary); T5's vocabulary is
not shipped, so it is read from the folder or from ``t5_tokenizer/`` beside the T5 file, and a
located message says where to put it when it is in neither. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sdflow.models import fit
from sdflow.models.dit_detect import TextEncoder
from sdflow.models.dit_keys import t5_mapping
from sdflow.models.families import Family, TextEncoderSlot
from sdflow.models.ldm_keys import clip_mapping
from sdflow.models.loaded import tokenizer_fixed
from sdflow.models.module_fill import build_empty, fill_weights
from sdflow.models.singlefile import CONFIGS
from sdflow.models.weights import WeightReader

# the CLIP tokenizers shipped with SDXL's configs: CLIP-L's (pad <|endoftext|>) and bigG's (pad "!")
CLIP_TOKENIZERS = {
    "tokenizer": CONFIGS / "sdxl" / "tokenizer",
    "tokenizer_2": CONFIGS / "sdxl" / "tokenizer_2",
}
T5_TOKENIZER_FOLDER = "t5_tokenizer"
_T5_FILES = ("tokenizer.json", "spiece.model")


TOO_LARGE_HINT = (
    "run with --offload model (each encoder on the device only while it encodes) or in fp16 / bf16"
)


class SplitLoadError(ValueError):
    """The files do not make the family's text encoders, or a config or tokenizer is missing."""


def config_root(family: Family, variant: str | None = None) -> Path:
    """The shipped config folder of a family (Flux schnell: its own scheduler)."""
    return CONFIGS / (f"{family.name}_{variant}" if variant == "schnell" else family.name)


def scheduler_config(family: Family, config: Path | None, variant: str | None = None) -> dict[str, Any]:
    """The scheduler config of the user's folder, else the one shipped for the family (variant).

    A Flux file of the other variant than the folder's (a schnell transformer described by a dev folder)
    samples with its own variant's shipped schedule: schnell has no shift, dev shifts by resolution."""
    if config is not None and variant is not None and _folder_variant(family, config) not in (None, variant):
        config = None
    path = (config or config_root(family, variant)) / "scheduler" / "scheduler_config.json"
    return read_json(path)


def _folder_variant(family: Family, folder: Path) -> str | None:
    """Flux: "dev" or "schnell" as the folder's transformer config says; None for other families."""
    if family.name != "flux":
        return None
    config = read_json(folder / "transformer" / "config.json")
    return "dev" if config.get("guidance_embeds") else "schnell"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitLoadError(f"missing config file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SplitLoadError(f"config file {path} is not valid JSON: {exc}") from None


def _slot_config(family: Family, slot: TextEncoderSlot, config: Path | None) -> Any:
    import transformers

    data = read_json((config or config_root(family)) / slot.folder / "config.json")
    cls = transformers.T5Config if slot.model_class == "T5EncoderModel" else transformers.CLIPTextConfig
    return cls.from_dict(data)


def _assign(
    family: Family, found: list[tuple[Path, TextEncoder]], configs: list[Any]
) -> list[tuple[Path, TextEncoder]]:
    """The file part each slot of the family takes (SplitLoadError naming what is missing)."""
    chosen, missing = [], []
    for slot, config in zip(family.encoders, configs, strict=True):
        t5 = slot.model_class == "T5EncoderModel"
        width = config.d_model if t5 else config.hidden_size
        match = [p for p in found if p[1].kind == ("t5" if t5 else "clip") and p[1].width == width]
        if not match:
            missing.append(f"{'T5' if t5 else 'CLIP'} {width} wide ({slot.folder})")
            continue
        chosen.append(match[0])
    if missing:
        have = ", ".join(f"{part.label()} ({path.name})" for path, part in found) or "none"
        raise SplitLoadError(
            f"the {family.label} text encoders need {len(family.encoders)} encoders; missing: "
            f"{'; '.join(missing)}. The files hold: {have}. Add the missing file (ComfyUI keeps them in "
            "models/text_encoders: clip_l, clip_g, t5xxl) to 'files'"
        )
    return chosen


def load_text_encoders(
    paths: list[Path],
    family: Family,
    device: torch.device,
    dtype: torch.dtype,
    config: Path | None = None,
    parts: list[list[TextEncoder]] | None = None,
) -> tuple[list[torch.nn.Module], list[Any]]:
    """The family's text encoders and tokenizers, in its slot order, from ``paths``."""
    import transformers

    from sdflow.models.dit_load import inspect_file

    found = []
    for index, path in enumerate(paths):
        encoders = parts[index] if parts is not None else list(inspect_file(path).text_encoders)
        found += [(path, part) for part in encoders]
    configs = [_slot_config(family, slot, config) for slot in family.encoders]
    chosen = _assign(family, found, configs)
    shapes: dict[str, tuple[int, ...]] = {}
    for path, part in chosen:  # every encoder together: they load side by side
        with WeightReader(path) as reader:
            shapes |= {f"{path}:{k}": v for k, v in reader.shapes.items() if k.startswith(part.prefix)}
    names = " + ".join(part.label() for _, part in chosen)
    fit.check(f"the text encoders ({names})", fit.weight_bytes(shapes, dtype), device, TOO_LARGE_HINT)
    encoders, tokenizers = [], []
    for slot, settings, (path, part) in zip(family.encoders, configs, chosen, strict=True):
        cls = getattr(transformers, slot.model_class)
        module = build_empty(cls, settings)
        mapping = t5_mapping(part.prefix) if part.kind == "t5" else clip_mapping(part.prefix)
        with WeightReader(path) as reader:
            fill_weights(module, mapping, reader, dtype, device, f"{part.label()} ({path.name})")
        if part.kind == "t5":  # its token embedding is the shared one
            module.encoder.embed_tokens = module.shared
        encoders.append(module)
        tokenizers.append(tokenizer_fixed(_tokenizer(slot, config, path), module))
    return encoders, tokenizers


def _tokenizer(slot: TextEncoderSlot, config: Path | None, file: Path) -> Any:
    import transformers

    cls = getattr(transformers, slot.tokenizer_class)
    if config is not None and (config / slot.tokenizer_folder).is_dir():
        return cls.from_pretrained(config / slot.tokenizer_folder)
    if slot.tokenizer_class == "CLIPTokenizer":
        return cls.from_pretrained(CLIP_TOKENIZERS.get(slot.tokenizer_folder, CLIP_TOKENIZERS["tokenizer"]))
    beside = file.parent / T5_TOKENIZER_FOLDER
    if any((beside / name).is_file() for name in _T5_FILES):
        return cls.from_pretrained(beside)
    raise SplitLoadError(
        f"no T5 tokenizer for {file.name}: sdflow does not ship T5's vocabulary. Put the T5-XXL tokenizer "
        f"files ({' or '.join(_T5_FILES)}, e.g. from a Flux or SD3 diffusers folder's tokenizer_2 / "
        f"tokenizer_3) in {beside}, or name that diffusers folder in 'config'"
    )
