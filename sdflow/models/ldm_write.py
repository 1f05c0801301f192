"""Writing models as one original-layout (LDM) single file, the layout ComfyUI and A1111 read.

The same key tables that read single files (``ldm_keys``) say where each weight goes, so a file this
writes loads back through ``singlefile`` to the same tensors. Used by CheckpointSave and by the tools
that make the tiny test files.
"""

from __future__ import annotations

import torch

from sdflow.models.detect import LAYOUTS, Layout
from sdflow.models.families import Family
from sdflow.models.ldm_keys import (
    Mapping,
    clip_mapping,
    openclip_mapping,
    openclip_vision_mapping,
    swap_halves,
    unet_mapping,
    vae_mapping,
)
from sdflow.models.unclip_detect import EMBEDDER, NOISE_AUGMENTOR


class NoLayout(ValueError):
    """The family has no single-file layout sdflow writes."""


def layout_of(family: Family) -> Layout:
    """The single-file layout of ``family`` (NoLayout if there is none)."""
    for layout in LAYOUTS:
        if layout.family == family:
            return layout
    raise NoLayout(f"sdflow writes no single-file layout for {family.label} models")


def to_file(module: torch.nn.Module, mapping: Mapping, dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """A module's weights under their single-file names and shapes, on the CPU (in ``dtype`` for
    floating-point weights, if given)."""
    out: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in module.state_dict().items():
        source = mapping(name)
        if source is None:
            raise KeyError(f"no single-file name for {name}")
        value = tensor.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        if source.fused:  # pieces of one tensor: written once all its rows are there
            parts = fused.setdefault(source.key, {})
            parts[source.start(tuple(value.shape))] = value
            rows = source.file_shape(tuple(value.shape))[0]
            if sum(p.shape[0] for p in parts.values()) == rows:
                out[source.key] = torch.cat([parts[start] for start in sorted(parts)])
        elif source.kind == "swap":
            out[source.key] = swap_halves(value).contiguous()
        elif source.kind == "transpose":
            out[source.key] = value.t().contiguous()
        else:
            out[source.key] = value.reshape(source.file_shape(tuple(value.shape))).contiguous()
    return out


def openclip_extras(state: dict[str, torch.Tensor], prefix: str, layers: int) -> dict[str, torch.Tensor]:
    """What SD 2.x files hold beyond what its diffusers encoder keeps: a last resblock (SD 2.x reads
    the penultimate layer, so its values never matter; a copy of the one before), the text projection
    (identity) and the logit scale, so that tools expecting the full OpenCLIP model read the file."""
    extras = {}
    last = f"{prefix}transformer.resblocks.{layers - 1}."
    for key in [k for k in state if k.startswith(last)]:
        extras[key.replace(last, f"{prefix}transformer.resblocks.{layers}.")] = state[key].clone()
    norm = state[f"{prefix}ln_final.weight"]
    extras[f"{prefix}text_projection"] = torch.eye(norm.shape[0], dtype=norm.dtype)
    extras[f"{prefix}logit_scale"] = torch.tensor(4.6052, dtype=norm.dtype)
    return extras


def checkpoint_state(
    layout: Layout,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: list[torch.nn.Module],
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """Every weight of one checkpoint under the layout's single-file names (``text_encoders`` in the
    layout's order)."""
    if len(text_encoders) != len(layout.text_encoders):
        wanted = len(layout.text_encoders)
        raise ValueError(f"{layout.family.label} files hold {wanted} text encoders, not {len(text_encoders)}")
    state = to_file(unet, unet_mapping(dict(unet.config), layout.unet_prefix), dtype)
    state |= to_file(vae, vae_mapping(dict(vae.config), layout.vae_prefix), dtype)
    for part, text in zip(layout.text_encoders, text_encoders, strict=True):
        if part.style == "openclip":
            state |= to_file(text, openclip_mapping(part.prefix), dtype)
            if not hasattr(text, "text_projection"):  # SD 2.x: its diffusers encoder drops these
                state |= openclip_extras(state, part.prefix, text.config.num_hidden_layers)
        else:
            state |= to_file(text, clip_mapping(part.prefix), dtype)
            positions = text.config.max_position_embeddings
            state[f"{part.prefix}text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return state


def unclip_state(
    image_encoder: torch.nn.Module | None,
    betas: torch.Tensor,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The image side of an SD 2.1 unCLIP file under Stability's names: the CLIP image encoder as an
    OpenCLIP visual tower under ``embedder.model.visual.`` (none if None), the noise augmentor's
    schedule buffers as Stability's ``register_schedule`` keeps them (from ``betas``, in float64
    then stored as float32), and, if given, the normaliser's (mean, std) as ``data_mean`` /
    ``data_std``, which Stability's own files lack."""
    state = {} if image_encoder is None else to_file(image_encoder, openclip_vision_mapping(EMBEDDER), dtype)
    betas = betas.double()
    cumulative = torch.cumprod(1 - betas, dim=0)
    buffers = {
        "betas": betas,
        "alphas_cumprod": cumulative,
        "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), cumulative[:-1]]),
        "sqrt_alphas_cumprod": cumulative.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1 - cumulative).sqrt(),
        "log_one_minus_alphas_cumprod": (1 - cumulative).log(),
        "sqrt_recip_alphas_cumprod": (1 / cumulative).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1 / cumulative - 1).sqrt(),
    }
    state |= {NOISE_AUGMENTOR + name: value.float().contiguous() for name, value in buffers.items()}
    if stats is not None:
        for name, value in zip(("data_mean", "data_std"), stats, strict=True):
            state[NOISE_AUGMENTOR + name] = value.detach().float().cpu().reshape(1, -1).contiguous()
    return state
