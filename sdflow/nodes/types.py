"""Port types: the values that flow along edges. An edge is legal only when the types fit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sdflow.models.families import SD15, Family


class Port:
    """Marker base: a field typed with a Port subclass can only be filled by a link."""

    def nbytes(self) -> int:
        """Bytes this value holds in tensors (for the output cache's budget)."""
        return sum(_tensor_bytes(v) for v in vars(self).values())


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, Port):
        return value.nbytes()
    if isinstance(value, torch.nn.Module):
        return sum(p.element_size() * p.nelement() for p in value.parameters())
    return 0


@dataclass(frozen=True, eq=False)
class Model(Port):
    """A denoising UNet with its checkpoint's scheduler config and what kind of model it is."""

    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    family: Family = SD15

    @property
    def is_inpainting(self) -> bool:
        """True for a 9-channel UNet fed latent + mask + masked-image latent."""
        return self.unet.config.in_channels == 9


@dataclass(frozen=True, eq=False)
class Clip(Port):
    """A tokenizer and its CLIP text encoder."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    family: Family = SD15


@dataclass(frozen=True, eq=False)
class Vae(Port):
    """A variational autoencoder mapping images (8x larger) to scaled latents."""

    vae: torch.nn.Module

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@dataclass(frozen=True, eq=False)
class Conditioning(Port):
    """Text embeddings, shape (batch, tokens, dim), as the UNet's cross-attention reads them."""

    embeds: torch.Tensor
    family: Family = SD15


@dataclass(frozen=True, eq=False)
class Schedule(Port):
    """A sampler with its step count: AddNoise and DenoiseLoop read the same one."""

    sampler: str
    steps: int
    scheduler_class: type
    scheduler_config: dict[str, Any]
    inpainting_model: bool = False  # for a 9-channel UNet: AddNoise draws in diffusers' order

    def make(self, device: torch.device | str) -> Any:
        """A fresh scheduler with its timesteps set (schedulers are stateful: one per loop)."""
        scheduler = self.scheduler_class.from_config(self.scheduler_config)
        scheduler.set_timesteps(self.steps, device=device)
        return scheduler


@dataclass(frozen=True, eq=False)
class NoiseState(Port):
    """How a latent was noised: enough for DenoiseLoop to continue exactly where AddNoise stopped."""

    schedule: Schedule
    start_index: int
    noise: torch.Tensor
    clean: torch.Tensor
    rng_state: torch.Tensor


@dataclass(frozen=True, eq=False)
class MaskedImage(Port):
    """The VAE posterior of the image with its repaint area blanked: a 9-channel UNet's extra input.

    diffusers samples it after drawing the noise, from the same generator, so VAEEncode keeps the
    distribution and AddNoise draws the sample (``latents``) in that order."""

    mean: torch.Tensor
    std: torch.Tensor
    scaling_factor: float
    sample: bool
    stream_start: torch.Tensor  # generator state before VAEEncode drew the image's own sample
    latents: torch.Tensor | None = None

    def drawn(self, generator: torch.Generator) -> MaskedImage:
        """This with ``latents`` set: a posterior sample from ``generator`` (or the mean), scaled."""
        if not self.sample:
            return replace(self, latents=self.mean * self.scaling_factor)
        # As diffusers' randn_tensor: drawn on the generator's (CPU) device in the posterior's dtype.
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype).to(self.mean.device)
        return replace(self, latents=(self.mean + self.std * eps) * self.scaling_factor)

    def value(self) -> torch.Tensor:
        """The scaled masked-image latents: the drawn sample, or the mean if none was drawn yet."""
        return self.latents if self.latents is not None else self.mean * self.scaling_factor


@dataclass(frozen=True, eq=False)
class Latent(Port):
    """Latent samples (batch, 4, h, w) plus optional noise mask, noise state and RNG stream.

    ``noise_mask`` (batch or 1, 1, h, w), 1 = repaint, makes DenoiseLoop inpaint; ``masked_image``
    feeds a 9-channel inpainting UNet."""

    samples: torch.Tensor
    noise_mask: torch.Tensor | None = None
    noise: NoiseState | None = None
    rng_state: torch.Tensor | None = None
    is_empty: bool = False
    masked_image: MaskedImage | None = None

    def with_(self, **changes: Any) -> Latent:
        """A copy with some attributes replaced (latents are immutable: they live in the cache)."""
        return replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Image(Port):
    """Images as float32 (batch, channels, height, width) in [0, 1], RGB."""

    pixels: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.pixels.shape[-1]), int(self.pixels.shape[-2])


@dataclass(frozen=True, eq=False)
class Mask(Port):
    """Masks as float32 (batch, 1, height, width) in [0, 1]; 1 (white) means repaint."""

    values: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.values.shape[-1]), int(self.values.shape[-2])


@dataclass(frozen=True)
class SavedFiles(Port):
    """Paths a node wrote."""

    paths: tuple[str, ...] = field(default_factory=tuple)
