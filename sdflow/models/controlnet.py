"""ControlNet and T2I-Adapter files: what one holds (decided from its keys, never its name) and loading it.

Three layouts: a diffusers folder (``config.json`` + weights), a diffusers-layout single file, and an
original (LDM) single file as A1111 and ComfyUI users have them (``control_*.safetensors``, keys
``input_hint_block`` / ``zero_convs`` / ``middle_block_out``, optionally under ``control_model.``).
A single file's architecture comes from a UNet config: the ``config`` folder's, else the detected
family's shipped one, with the ControlNet's own hint-embedding sizes read from its shapes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdflow.models.families import SD2, SD15, SDXL, Family
from sdflow.models.family_hints import control_family
from sdflow.models.ldm_keys import Mapping, Source, unet_mapping
from sdflow.models.module_fill import build_empty, fill_weights
from sdflow.models.weights import WeightReader, is_pickle, pickle_refusal

CONFIGS = Path(__file__).resolve().parent / "configs"
CONTROLNET, ADAPTER = "controlnet", "t2i_adapter"
_HINT = "input_hint_block.0.weight"
_DIFFUSERS_HINT = "controlnet_cond_embedding.conv_in.weight"
_ADAPTER_IN = "adapter.conv_in.weight"
_LIGHT_ADAPTER_IN = "adapter.body.0.in_conv.weight"
# ControlNetModel's arguments copied from a UNet config (as ControlNetModel.from_unet copies them)
_FROM_UNET = (
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor", "act_fn",
    "norm_num_groups", "norm_eps", "cross_attention_dim", "transformer_layers_per_block",
    "encoder_hid_dim", "encoder_hid_dim_type", "attention_head_dim", "num_attention_heads",
    "use_linear_projection", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
    "num_class_embeds", "upcast_attention", "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim", "mid_block_type",
)  # fmt: skip


class ControlFileError(ValueError):
    """A file or folder that is no ControlNet / T2I-Adapter sdflow can load (the message says why)."""


@dataclass(frozen=True)
class ControlFile:
    """What a control file holds: ControlNet or T2I-Adapter, its layout, and its family.

    ``family`` None: a T2I-Adapter for SD 1.x/2.x (the two share the UNet's channels, so it fits both)."""

    kind: str  # CONTROLNET | ADAPTER
    layout: str  # "folder" | "diffusers" | "ldm"
    family: Family | None
    prefix: str = ""  # of an LDM file's keys ("control_model." or "")

    def fits(self, family: Family) -> bool:
        """Whether this control can steer a UNet of ``family``."""
        if self.family is None:
            return family in (SD15, SD2)
        return self.family == family

    def label(self) -> str:
        """'SD 1.x ControlNet', 'SDXL T2I-Adapter'..."""
        what = "ControlNet" if self.kind == CONTROLNET else "T2I-Adapter"
        return f"{self.family.label if self.family else 'SD 1.x/2.x'} {what}"


def weights_file(folder: Path) -> Path | None:
    """A diffusers folder's weights file (safetensors first), or None."""
    for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    return None


def probe(path: Path) -> ControlFile:
    """What ``path`` holds, from a folder's config.json or a file's keys (pickles read weights-only)."""
    if path.is_dir():
        return _folder_kind(_read_config(path / "config.json"))
    with WeightReader(path, allow_pickle=is_pickle(path)) as reader:
        return from_shapes(reader.shapes, path.name)


def from_shapes(shapes: dict[str, tuple[int, ...]], name: str) -> ControlFile:
    """The kind, layout and family of a single file with these keys and shapes."""
    if _DIFFUSERS_HINT in shapes:
        return ControlFile(
            CONTROLNET, "diffusers", _controlnet_family(shapes, "add_embedding.linear_1.weight")
        )
    for prefix in ("control_model.", ""):
        if prefix + _HINT in shapes:
            family = _controlnet_family(shapes, prefix + "label_emb.0.0.weight")
            return ControlFile(CONTROLNET, "ldm", family, prefix)
    for key in (_ADAPTER_IN, _LIGHT_ADAPTER_IN):
        if key in shapes:
            unshuffled = shapes[key][1]  # input channels x downscale factor squared (8: SD, 16: SDXL)
            return ControlFile(
                ADAPTER, "diffusers", SDXL if unshuffled % 256 == 0 and key == _ADAPTER_IN else None
            )
    if "body.0.block1.weight" in shapes or "body.0.resnets.0.block1.weight" in shapes:
        raise ControlFileError(
            f"'{name}' is a T2I-Adapter in TencentARC's original layout: load the diffusers version of "
            "it (a folder with config.json, or its diffusion_pytorch_model.safetensors)"
        )
    raise ControlFileError(
        f"'{name}' is neither a ControlNet (no input_hint_block / controlnet_cond_embedding keys) nor a "
        f"T2I-Adapter (no adapter.conv_in key); it has {len(shapes)} tensors"
    )


def _controlnet_family(shapes: dict[str, tuple[int, ...]], added_key: str) -> Family:
    context = next((s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    return control_family(added_key in shapes, context)


def _folder_kind(config: dict[str, Any]) -> ControlFile:
    kind = config.get("_class_name")
    if kind == "ControlNetModel":
        family = control_family(
            config.get("addition_embed_type") == "text_time", config.get("cross_attention_dim")
        )
        return ControlFile(CONTROLNET, "folder", family)
    if kind == "T2IAdapter":
        return ControlFile(
            ADAPTER, "folder", SDXL if config.get("adapter_type") == "full_adapter_xl" else None
        )
    raise ControlFileError(f"its config.json describes a {kind}, not a ControlNetModel or T2IAdapter")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ControlFileError(f"the folder has no {path.name}: not a diffusers ControlNet folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlFileError(f"{path} is not valid JSON: {exc}") from None


def load(
    path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool, config: Path | None = None
) -> tuple[torch.nn.Module, ControlFile]:
    """The ControlNetModel or T2IAdapter at ``path`` on ``device`` in ``dtype``, with what it is.
    ``config``: a diffusers checkpoint folder whose UNet config describes a single file's architecture."""
    found = probe(path)
    if found.layout == "folder":
        return _load_folder(path, found, device, dtype, allow_pickle), found
    if is_pickle(path) and not allow_pickle:
        raise ControlFileError(pickle_refusal(path))
    with WeightReader(path, allow_pickle) as reader:
        if found.kind == ADAPTER:
            module = build_empty(_adapter_factory, _adapter_config(reader.shapes))
            fill_weights(module, _identity, reader, dtype, device, "T2I-Adapter")
        else:
            settings = controlnet_config(reader.shapes, found, config)
            module = build_empty(_controlnet_factory, settings)
            mapping = _identity if found.layout == "diffusers" else ldm_mapping(settings, found.prefix)
            fill_weights(module, mapping, reader, dtype, device, "ControlNet")
    return module, found


def _load_folder(
    folder: Path, found: ControlFile, device: torch.device, dtype: torch.dtype, allow_pickle: bool
) -> torch.nn.Module:
    from diffusers import ControlNetModel, T2IAdapter

    weights = weights_file(folder)
    if weights is None:
        raise ControlFileError(f"the folder {folder} has no diffusion_pytorch_model.safetensors")
    if is_pickle(weights) and not allow_pickle:
        raise ControlFileError(pickle_refusal(weights))
    cls = ControlNetModel if found.kind == CONTROLNET else T2IAdapter
    module = cls.from_pretrained(folder, torch_dtype=dtype, use_safetensors=not is_pickle(weights))
    return module.to(device).eval().requires_grad_(False)


def _identity(name: str) -> Source:
    return Source(name)


def _controlnet_factory(settings: dict[str, Any]) -> torch.nn.Module:
    from diffusers import ControlNetModel

    return ControlNetModel(**settings)


def _adapter_factory(settings: dict[str, Any]) -> torch.nn.Module:
    from diffusers import T2IAdapter

    return T2IAdapter(**settings)


def controlnet_config(
    shapes: dict[str, tuple[int, ...]], found: ControlFile, folder: Path | None
) -> dict[str, Any]:
    """ControlNetModel arguments for a single file: the UNet config of ``folder`` (else of the family's
    shipped configs) as from_unet copies it, and the hint embedding's sizes from the file's shapes."""
    assert found.family is not None
    unet_config = (folder / "unet" if folder else CONFIGS / found.family.name / "unet") / "config.json"
    if folder is not None and (folder / "config.json").is_file() and not (folder / "unet").is_dir():
        unet_config = folder / "config.json"  # a ControlNet folder: its own config
    base = _read_config(unet_config)
    settings = {key: base[key] for key in _FROM_UNET if key in base}
    prefix = (
        "controlnet_cond_embedding." if found.layout == "diffusers" else found.prefix + "input_hint_block."
    )
    first = prefix + ("conv_in.weight" if found.layout == "diffusers" else "0.weight")
    if first in shapes:
        settings["conditioning_channels"] = shapes[first][1]
        settings["conditioning_embedding_out_channels"] = _hint_channels(shapes, prefix, found.layout)
    return settings


def _hint_channels(shapes: dict[str, tuple[int, ...]], prefix: str, layout: str) -> list[int]:
    """The hint embedding's channels: conv_in's output, then every stride-2 block's (each second block)."""
    if layout == "diffusers":
        blocks = sorted(
            (k for k in shapes if re.fullmatch(re.escape(prefix) + r"blocks\.\d+\.weight", k)),
            key=lambda k: int(k.split(".")[-2]),
        )
        keys = [prefix + "conv_in.weight", *blocks]
    else:  # input_hint_block.0, 2, 4... are convolutions (1, 3, 5... activations), the last conv_out
        convs = sorted(
            int(m[1]) for k in shapes if (m := re.fullmatch(re.escape(prefix) + r"(\d+)\.weight", k))
        )
        keys = [f"{prefix}{i}.weight" for i in convs[:-1]]
    return [shapes[keys[0]][0]] + [shapes[k][0] for k in keys[2::2]]


def ldm_mapping(settings: dict[str, Any], prefix: str) -> Mapping:
    """ControlNetModel names -> an LDM ControlNet file's keys (the UNet encoder's, hint, zero convs)."""
    unet = unet_mapping({**settings, "up_block_types": []}, prefix)
    hint_blocks = 2 * (len(settings.get("conditioning_embedding_out_channels", (16, 32, 96, 256))) - 1)

    def source(name: str) -> Source | None:
        if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.+)", name):
            return Source(f"{prefix}input_hint_block.0.{m[1]}")
        if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.+)", name):
            return Source(f"{prefix}input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}")
        if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.+)", name):
            return Source(f"{prefix}input_hint_block.{2 * (hint_blocks + 1)}.{m[1]}")
        if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.+)", name):
            return Source(f"{prefix}zero_convs.{m[1]}.0.{m[2]}")
        if m := re.fullmatch(r"controlnet_mid_block\.(.+)", name):
            return Source(f"{prefix}middle_block_out.0.{m[1]}")
        return unet(name)

    return source


def _adapter_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """T2IAdapter arguments read from a diffusers-layout adapter file's shapes."""
    light = _ADAPTER_IN not in shapes
    blocks = sorted({int(m[1]) for k in shapes if (m := re.match(r"adapter\.body\.(\d+)\.", k))})
    resnets = {int(m[1]) for k in shapes if (m := re.match(r"adapter\.body\.0\.resnets\.(\d+)\.", k))}
    if light:
        unshuffled = shapes[_LIGHT_ADAPTER_IN][1]
        channels = [shapes[f"adapter.body.{i}.out_conv.weight"][0] for i in blocks]
        adapter_type, factor = "light_adapter", 8
    else:
        unshuffled = shapes[_ADAPTER_IN][1]
        channels = [shapes[f"adapter.body.{i}.resnets.0.block1.weight"][0] for i in blocks]
        adapter_type, factor = ("full_adapter_xl", 16) if unshuffled % 256 == 0 else ("full_adapter", 8)
    return {
        "in_channels": unshuffled // factor**2,
        "channels": channels,
        "num_res_blocks": len(resnets),
        "downscale_factor": factor,
        "adapter_type": adapter_type,
    }
