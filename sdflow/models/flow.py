"""Flow matching for the diffusion transformer families (SD3, Flux): their denoisers and schedules.

A ``TransformerDenoiser`` wraps diffusers' SD3Transformer2DModel / FluxTransformer2DModel so that
DenoiseLoop calls it as it calls a UNet: ``denoiser(x, t, encoder_hidden_states=...,
added_cond_kwargs=..., return_dict=False)`` with ``x`` the (batch, 16, h, w) latent and ``t`` the
scheduler's timestep (sigma x 1000). The wrapper converts to each transformer's own call, as diffusers'
pipelines do: SD3 takes the timestep as it is; Flux takes it / 1000, packs the latent in 2x2 patches
with their position ids, and reads the distilled guidance. Flow-matching schedulers get the three
methods the loop uses on every scheduler (``init_noise_sigma``, ``scale_model_input``, ``add_noise``:
x = (1 - sigma) x0 + sigma n).
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

PATCH = 2  # both transformers read 2x2 latent patches (Flux packs them, SD3 patchifies inside)


class TransformerDenoiser(torch.nn.Module):
    """A diffusion transformer called as a UNet; ``config`` answers in latent channels."""

    def __init__(self, transformer: torch.nn.Module, channels: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.config = SimpleNamespace(
            in_channels=channels, out_channels=channels, transformer=transformer.config
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device


class SD3Denoiser(TransformerDenoiser):
    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__(transformer, int(transformer.config.in_channels))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        timestep = torch.as_tensor(timestep, device=sample.device).expand(sample.shape[0])
        out = self.transformer(
            hidden_states=sample,
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states,
            pooled_projections=(added_cond_kwargs or {})["pooled_projections"],
            return_dict=False,
        )[0]
        return (out,)


class FluxDenoiser(TransformerDenoiser):
    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__(transformer, int(transformer.config.in_channels) // (PATCH * PATCH))

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        added = added_cond_kwargs or {}
        batch, channels, height, width = sample.shape
        if height % PATCH or width % PATCH:
            raise ValueError(
                f"Flux reads 2x2 latent patches: the latent is {height}x{width}, make the picture's "
                "sides multiples of 16 pixels"
            )
        dtype = encoder_hidden_states.dtype
        timestep = torch.as_tensor(timestep, device=sample.device).expand(batch).to(sample.dtype)
        guidance = added.get("guidance") if self.transformer.config.guidance_embeds else None
        out = self.transformer(
            hidden_states=pack(sample),
            timestep=timestep / 1000,
            guidance=None if guidance is None else guidance.to(sample.device, torch.float32),
            pooled_projections=added["pooled_projections"],
            encoder_hidden_states=encoder_hidden_states,
            txt_ids=torch.zeros(encoder_hidden_states.shape[1], 3, device=sample.device, dtype=dtype),
            img_ids=image_ids(height // PATCH, width // PATCH, sample.device, dtype),
            return_dict=False,
        )[0]
        return (unpack(out, channels, height, width),)


DENOISERS = {"sd3": SD3Denoiser, "flux": FluxDenoiser}


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) -> (b, h/2 * w/2, c * 4): Flux's 2x2 patches, as diffusers' _pack_latents."""
    b, c, h, w = latents.shape
    latents = latents.view(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
    return latents.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack(packed: torch.Tensor, channels: int, height: int, width: int) -> torch.Tensor:
    b = packed.shape[0]
    latents = packed.view(b, height // PATCH, width // PATCH, channels, PATCH, PATCH)
    return latents.permute(0, 3, 1, 4, 2, 5).reshape(b, channels, height, width)


def image_ids(rows: int, columns: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Flux's (row, column) position ids of each packed patch, as diffusers' _prepare_latent_image_ids."""
    ids = torch.zeros(rows, columns, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(columns)[None, :]
    return ids.reshape(rows * columns, 3).to(device=device, dtype=dtype)


# -- schedules -----------------------------------------------------------------------------------


def calculate_shift(seq_len: int, config: dict[str, Any]) -> float:
    """Flux's resolution-dependent shift mu: linear in the image's patch count (diffusers'
    calculate_shift, with the scheduler config's bounds)."""
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * slope + base_shift - slope * base_len


def timestep_kwargs(
    family: Any, config: dict[str, Any], steps: int, latent_size: tuple[int, int] | None
) -> dict[str, Any]:
    """``set_timesteps`` arguments as the family's diffusers pipeline passes them: Flux's linear
    sigmas, and mu when the config shifts by resolution (ValueError without the latent's size)."""
    kwargs: dict[str, Any] = {}
    if family.linear_sigmas and not config.get("use_flow_sigmas"):
        kwargs["sigmas"] = np.linspace(1.0, 1 / steps, steps)
    if config.get("use_dynamic_shifting"):
        if latent_size is None:
            raise ValueError("this schedule shifts by resolution: it needs the latent's size")
        kwargs["mu"] = calculate_shift((latent_size[0] // PATCH) * (latent_size[1] // PATCH), config)
    return kwargs


# ComfyUI's schedules on a flow model, as the unshifted sigmas the scheduler then shifts (by its
# ``shift``, or by resolution): `simple` takes every (1000 / steps)-th of the model's 1,000 sigmas
# t/1000 from the top (for steps that divide 1,000: linspace(1, 1/steps, steps), what diffusers' Flux
# pipeline passes). Only schedulers that take a sigma table (flow Euler) have them.
FLOW_SCHEDULES: dict[str, tuple[str, ...]] = {"euler": ("simple",)}
FLOW_TABLE = 1000


def flow_sigmas(name: str, steps: int) -> tuple[float, ...]:
    """The unshifted sigmas of ComfyUI's schedule ``name`` on a flow model, for ``steps`` steps."""
    if name != "simple":
        raise ValueError(f"no flow-matching '{name}' schedule")
    stride = FLOW_TABLE / steps
    return tuple((FLOW_TABLE - int(i * stride)) / FLOW_TABLE for i in range(steps))


# ComfyUI's schedules a sigma table (BasicScheduler) can take on a flow model, and the fixed shift such a
# table is computed with: the model's shift, or for a schedule that shifts by resolution, Flux's at its
# largest size, exp(max_shift) (ComfyUI's default Flux sampling, shift 1.15 as mu).
TABLE_SCHEDULES = ("simple", "normal", "sgm_uniform")


def table_shift(config: dict[str, Any]) -> float:
    if config.get("use_dynamic_shifting"):
        return math.exp(config.get("max_shift", 1.15))
    return float(config.get("shift", 1.0))


def shift_sigmas(t: np.ndarray, shift: float) -> np.ndarray:
    """A flow model's sigmas at unshifted times ``t``: shift t / (1 + (shift - 1) t)."""
    return shift * t / (1 + (shift - 1) * t)


def sigma_table(config: dict[str, Any], name: str, steps: int) -> torch.Tensor:
    """ComfyUI's ``name`` sigmas (ending in 0) on the flow model whose scheduler config is ``config``
    (ValueError for a schedule flow models do not have here)."""
    if name not in TABLE_SCHEDULES:
        raise ValueError(
            f"flow-matching models take the schedules {', '.join(TABLE_SCHEDULES)}, not '{name}'"
        )
    shift = table_shift(config)
    if name == "simple":
        t = np.array(flow_sigmas("simple", steps))
    else:  # normal / sgm_uniform: even in timestep (= sigma x 1000), from 1 down to the smallest sigma
        low = float(shift_sigmas(np.array(1 / FLOW_TABLE), shift))
        t = np.linspace(1.0, low, steps + 1)[:-1] if name == "sgm_uniform" else np.linspace(1.0, low, steps)
    return torch.tensor([*shift_sigmas(t, shift), 0.0], dtype=torch.float32)


def table_config(config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config that runs a sigma table as given (the table is shifted already)."""
    return {**config, "shift": 1.0, "use_dynamic_shifting": False}


def flow_scheduler(sampler: str, config: dict[str, Any]) -> tuple[type, dict[str, Any]]:
    """The scheduler class and config for ``sampler`` on a flow-matching checkpoint (ValueError for a
    sampler diffusers has no flow-matching version of, or that cannot follow the config's shift)."""
    from sdflow.models.flow_schedulers import FLOW_SAMPLERS  # diffusers' schedulers, when asked for

    if sampler not in FLOW_SAMPLERS:
        raise ValueError(
            f"sampler '{sampler}' has no flow-matching version: use one of {', '.join(FLOW_SAMPLERS)}"
        )
    if sampler == "heun" and config.get("use_dynamic_shifting"):
        raise ValueError(
            "sampler 'heun' (diffusers' FlowMatchHeunDiscreteScheduler) has no shift by resolution, "
            "which this model's scheduler config asks for: use euler or dpmpp_2m"
        )
    cls, make = FLOW_SAMPLERS[sampler]
    return cls, make(dict(config))
