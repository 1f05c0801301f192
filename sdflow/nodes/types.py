"""Port types: the values that flow along edges. An edge is legal only when the types fit."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from sdflow.models.families import SD15, Family, SizeConditioning
from sdflow.prompts.padding import pad_tokens

LATENT_CHANNELS = 4  # SD 1.x/2.x/SDXL latents
VAE_SCALE = 8  # pixels per latent cell, each way
TINY_LOGVAR = -30.0  # a tiny autoencoder's posterior: a point (diffusers clamps log-variance here)


class Port:
    """Marker base: a field typed with a Port subclass can only be filled by a link."""

    def tensors(self) -> Iterator[torch.Tensor]:
        """Every tensor this value holds: its own, its nested ports', its modules' parameters and
        buffers (for the caches' byte budgets)."""
        for value in vars(self).values():
            if isinstance(value, torch.Tensor):
                yield value
            elif isinstance(value, Port):
                yield from value.tensors()
            elif isinstance(value, tuple):  # a conditioning's controls
                for item in value:
                    if isinstance(item, Port):
                        yield from item.tensors()
            elif isinstance(value, torch.nn.Module):
                yield from value.parameters()
                yield from value.buffers()

    def nbytes(self) -> int:
        """Bytes of the distinct tensor storages this value holds (shared ones counted once)."""
        return sum(storages([self]).values())


def storages(values: Iterable[Any]) -> dict[int, int]:
    """{storage address: bytes} of the tensors the ports among ``values`` hold: views and tensors
    shared between values (a LoRA-patched model and its base) appear once."""
    found: dict[int, int] = {}
    for value in values:
        if isinstance(value, Port):
            for tensor in value.tensors():
                storage = tensor.untyped_storage()
                found[storage.data_ptr()] = storage.nbytes()
    return found


@dataclass(frozen=True, eq=False)
class Model(Port):
    """A denoising UNet with its checkpoint's scheduler config and what kind of model it is."""

    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    family: Family = SD15
    image_prompts: tuple[Any, ...] = ()  # ApplyIPAdapter's ImagePrompts, in the UNet's slot order
    image_noising: Any = None  # an unCLIP UNet's (sdflow.models.unclip.ImageNoising): reads class labels
    source: str | None = None  # the checkpoint's diffusers folder, if it is one (previews match its VAE)

    @property
    def is_inpainting(self) -> bool:
        """True for a 9-channel UNet fed latent + mask + masked-image latent."""
        return self.unet.config.in_channels == 9


@dataclass(frozen=True, eq=False)
class Clip(Port):
    """The family's tokenizers and CLIP text encoders: one pair, or two for SDXL base.

    The first (or only) pair is ``tokenizer`` / ``text_encoder``, whichever encoder it is (the SDXL
    refiner's only one is OpenCLIP ViT-bigG); SDXL base's second is ``tokenizer_2`` / ``text_encoder_2``."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    family: Family = SD15
    tokenizer_2: Any = None
    text_encoder_2: torch.nn.Module | None = None
    # SD3's third encoder (T5)
    tokenizer_3: Any = None
    text_encoder_3: torch.nn.Module | None = None

    @property
    def pairs(self) -> list[tuple[Any, torch.nn.Module]]:
        """(tokenizer, text encoder) per encoder, in the order the family concatenates them."""
        pairs = [(self.tokenizer, self.text_encoder)]
        if self.text_encoder_2 is not None:
            pairs.append((self.tokenizer_2, self.text_encoder_2))
        if self.text_encoder_3 is not None:
            pairs.append((self.tokenizer_3, self.text_encoder_3))
        return pairs


@dataclass(frozen=True, eq=False)
class Vae(Port):
    """A variational autoencoder mapping images (8x larger) to scaled latents."""

    vae: torch.nn.Module
    sampling_decoder: bool = False  # decoding draws noise (a consistency decoder): VAEDecode seeds it

    @property
    def scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        """SD3's and Flux's VAEs shift their latents before scaling (latent = (z - shift) * scale)."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def to_latent(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's raw latents as the denoiser reads them (and back: ``from_latent``)."""
        return (z - self.shift_factor) * self.scaling_factor

    def from_latent(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.scaling_factor + self.shift_factor

    @property
    def decodes_only(self) -> bool:
        """True for a tiny autoencoder loaded from its decoder file alone (previews)."""
        return bool(getattr(self.vae, "decodes_only", False))

    def posterior(self, pixels: torch.Tensor) -> Any:
        """The VAE's posterior of ``pixels`` (its input range): a tiny autoencoder's latents are a
        point (deterministic: sampling returns them, still drawing from the generator)."""
        encoded = self.vae.encode(pixels)
        if hasattr(encoded, "latent_dist"):
            return encoded.latent_dist
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        latents = encoded.latents
        moments = torch.cat([latents, torch.full_like(latents, TINY_LOGVAR)], dim=1)
        return DiagonalGaussianDistribution(moments, deterministic=True)


@dataclass(frozen=True, eq=False)
class ControlNet(Port):
    """A ControlNet or T2I-Adapter (diffusers' ControlNetModel / T2IAdapter) with what it fits
    (``family`` None: a T2I-Adapter for SD 1.x/2.x, which fits both)."""

    module: torch.nn.Module
    kind: str  # "controlnet" | "t2i_adapter"
    family: Family | None = SD15
    name: str = ""  # the file's stem, for the A1111 metadata line


@dataclass(frozen=True, eq=False)
class ControlEntry(Port):
    """One ApplyControlNet: a control with its picture (batch, 3, h, w) in [0, 1], strength and window."""

    control_net: ControlNet
    image: torch.Tensor
    strength: float = 1.0
    start_percent: float = 0.0
    end_percent: float = 1.0
    module_name: str = "none"  # the preprocessor that made the picture (A1111's "Module:")


@dataclass(frozen=True)
class Region:
    """Where and when a conditioning acts (ComfyUI's area conditioning): an area of the latent (in
    pixels, or fractions with ``percent``), a mask (1 = acts), a strength, a range of the schedule.

    ``area`` is (x, y, width, height); None = the whole latent. ``start``/``end`` are fractions of the
    schedule (0 = its first, noisiest step) between which it acts."""

    area: tuple[float, float, float, float] | None = None
    percent: bool = False
    strength: float = 1.0
    mask: torch.Tensor | None = None  # (1 or batch, 1, h, w) pixels, resized to the latent when used
    mask_strength: float = 1.0
    mask_bounds: bool = False  # the area is the mask's bounding box
    start: float = 0.0
    end: float = 1.0


@dataclass(frozen=True, eq=False)
class Conditioning(Port):
    """Text embeddings, shape (batch, tokens, dim), as the UNet's cross-attention reads them.

    SDXL families add the pooled embedding (batch, dim; of the first 77-token chunk) and the size /
    aesthetic conditioning that DenoiseLoop turns into the UNet's time ids (the family says how).
    ``empty`` (1, 77, dim) is the empty prompt's embeddings, which pad a shorter conditioning to the
    token count of a longer one (long prompts are whole 77-token chunks); CLIPEncode attaches it to
    long, weighted and empty prompts (a plain one-chunk prompt is never the longer side).
    ``controls`` are the ApplyControlNet entries DenoiseLoop applies with it, in the order applied."""

    embeds: torch.Tensor
    family: Family = SD15
    pooled: torch.Tensor | None = None
    sizes: SizeConditioning = field(default_factory=SizeConditioning)
    empty: torch.Tensor | None = None
    controls: tuple[ControlEntry, ...] = ()
    unclip: tuple[Any, ...] = ()  # unCLIPConditioning's UnclipEntries (unCLIP class labels, revision)
    region: Region | None = None
    guidance: float | None = None  # Flux's distilled guidance (FluxGuidance); None: the family's default
    # a combination (ConditioningCombine): the conditionings DenoiseLoop predicts separately and blends
    parts: tuple[Conditioning, ...] = ()
    concat: torch.Tensor | None = None  # channels beside the latent: ComfyUI's concat_latent_image
    boxes: tuple[Any, ...] = ()  # GLIGENTextBoxApply's GroundingBoxes, in the order applied

    @property
    def pieces(self) -> tuple[Conditioning, ...]:
        """The plain conditionings this one stands for: its parts, else itself."""
        return self.parts or (self,)

    @property
    def regional(self) -> bool:
        """True when DenoiseLoop must predict part by part (a combination, an area, a mask, a range)."""
        return any(piece.region is not None for piece in self.pieces) or len(self.pieces) > 1

    @property
    def tokens(self) -> int:
        return int(self.embeds.shape[1])

    def padded_to(self, tokens: int, empty: torch.Tensor | None = None) -> Conditioning:
        """This lengthened to ``tokens`` with empty-prompt chunks (its own, else ``empty``, from
        conditioning of the same clip); ValueError when it cannot be (see ``pad_tokens``)."""
        if tokens == self.tokens:
            return self
        filler = self.empty if self.empty is not None else empty
        return replace(self, embeds=pad_tokens(self.embeds, filler, tokens))


@dataclass(frozen=True, eq=False)
class Schedule(Port):
    """A sampler with its step count: AddNoise and DenoiseLoop read the same one."""

    sampler: str
    steps: int
    scheduler_class: type
    scheduler_config: dict[str, Any]
    inpainting_model: bool = False  # for a 9-channel UNet: AddNoise draws in diffusers' order
    # An explicit table (ComfyUI's schedules): set_timesteps(sigmas=...) or (timesteps=...) instead.
    sigmas: tuple[float, ...] | None = None
    timesteps: tuple[int, ...] | None = None
    family: Family = SD15  # the model's: flow-matching families add set_timesteps arguments
    # Comfy mode (sdflow.nodes.ops.comfy_sampling): the whole sigma table ComfyUI's sampler walks,
    # ending in 0; None is diffusers mode (the scheduler class runs the steps).
    comfy_sigmas: tuple[float, ...] | None = None

    latent_channels = property(lambda self: self.family.latent_channels)

    @property
    def mode(self) -> str:
        return "diffusers" if self.comfy_sigmas is None else "comfy"

    def comfy_table(self, device: torch.device | str) -> torch.Tensor:
        """Comfy mode's sigma table, float32 on ``device``."""
        assert self.comfy_sigmas is not None
        return torch.tensor(self.comfy_sigmas, dtype=torch.float32, device=device)

    def make(self, device: torch.device | str, latent_size: tuple[int, int] | None = None) -> Any:
        """A fresh scheduler with its timesteps set (schedulers are stateful: one per loop), for a
        latent of ``latent_size`` (h, w) where the schedule depends on it (Flux's dynamic shift)."""
        taken = inspect.signature(self.scheduler_class.__init__).parameters  # (the rest: mu's bounds)
        scheduler = self.scheduler_class.from_config(
            {k: v for k, v in self.scheduler_config.items() if k in taken or k.startswith("_")}
        )
        extra = self.family.timestep_kwargs(self.scheduler_config, self.steps, latent_size)
        accepted = inspect.signature(scheduler.set_timesteps).parameters
        extra = {k: v for k, v in extra.items() if k in accepted}
        if self.sigmas is not None:
            extra.pop("sigmas", None)
            scheduler.set_timesteps(sigmas=list(self.sigmas), device=device, **extra)
        elif self.timesteps is not None:
            scheduler.set_timesteps(timesteps=list(self.timesteps), device=device)
        elif "sigmas" in extra:
            scheduler.set_timesteps(device=device, **extra)
        else:
            scheduler.set_timesteps(self.steps, device=device, **extra)
        return scheduler


@dataclass(frozen=True, eq=False)
class NoiseState(Port):
    """How a latent was noised: enough for DenoiseLoop to continue exactly where AddNoise stopped."""

    schedule: Schedule
    start_index: int
    noise: torch.Tensor
    clean: torch.Tensor
    rng_state: torch.Tensor
    seed: int | None = None  # comfy mode: the sampler's own noise is seeded with the noise's seed


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


@dataclass(frozen=True)
class Cut:
    """Where a split denoising stopped: the one stopping point of SDXL's base -> refiner hand-off and
    of ComfyUI's step splits.

    ``index`` is the step of the full schedule the next pass begins at. ``fraction`` is set for a cut
    made at a fraction of the schedule (diffusers' denoising_end): the original then stays clean at
    the cut (an inpainting blend stops re-noising it) and the next schedule resumes at that fraction
    of its own timesteps; without it (a cut after a step, ComfyUI's end_at_step with leftover noise)
    the schedule goes on and the next pass resumes at ``index``."""

    index: int
    fraction: float | None = None

    @property
    def clean(self) -> bool:
        """True when the original stays clean at the cut (a fraction cut, as diffusers)."""
        return self.fraction is not None


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
    # Set by a DenoiseLoop that stopped before the end of its schedule (end_at): the samples are
    # still noisy, and ``noise`` keeps the state an inpainting blend needs to go on.
    cut: Cut | None = None

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
