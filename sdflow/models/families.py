"""Model families: what differs between SD 1.x, SD 2.x, SDXL, SD3 and Flux, in one object.

Nodes ask the family (carried by Model, Clip and Conditioning) instead of branching on names; the
loaders decide the family from a checkpoint's files (``sdflow.models.detect``). The diffusion
transformer families (SD3, Flux) are ``FlowFamily`` objects: their denoiser, text conditioning and
flow-matching schedule are described in ``sdflow.models.flow`` and in the fields below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdflow.models.unclip import revision_pooled

# SDXL's extra UNet inputs ("time ids"), in the order its UNet reads them.
SIZE_IDS = ("original_size", "crops_coords_top_left", "target_size")
AESTHETIC_IDS = ("original_size", "crops_coords_top_left", "aesthetic_score")
# diffusers' default aesthetic scores for the refiner: what to draw / what to steer away from.
AESTHETIC_POSITIVE = 6.0
AESTHETIC_NEGATIVE = 2.5


@dataclass(frozen=True)
class TextEncoderSlot:
    """One text encoder of a family: its diffusers folders and whether it gives the pooled embedding."""

    folder: str  # "text_encoder", "text_encoder_2" or "text_encoder_3"
    tokenizer_folder: str
    projection: bool = False  # CLIPTextModelWithProjection: its text_embeds are the pooled embedding
    # the transformers classes of the encoder and its tokenizer (a T5 encoder for SD3 / Flux)
    encoder_class: str = ""  # "": CLIPTextModel or CLIPTextModelWithProjection, by ``projection``
    tokenizer_class: str = "CLIPTokenizer"

    @property
    def skippable(self) -> bool:
        """A CLIP encoder, whose layer clip_skip chooses (not T5)."""
        return not self.encoder_class

    @property
    def model_class(self) -> str:
        if self.encoder_class:
            return self.encoder_class
        return "CLIPTextModelWithProjection" if self.projection else "CLIPTextModel"


@dataclass(frozen=True)
class SizeConditioning:
    """SDXL's micro-conditioning for one prompt; None means diffusers' default, resolved at denoise time.

    Sizes are (width, height) in pixels (None: the picture being denoised); the crop is (left, top)."""

    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None
    aesthetic_score: float | None = None  # None: 6.0 as positive, 2.5 as negative (refiner only)

    def ids(self, names: tuple[str, ...], size: tuple[int, int], negative: bool) -> list[float]:
        """The time ids ``names`` asks for, for a picture of ``size`` (width, height)."""
        values: list[float] = []
        for name in names:
            if name == "original_size":
                width, height = self.original_size or size
                values += [height, width]  # diffusers' (height, width) order
            elif name == "crops_coords_top_left":
                left, top = self.crop_top_left
                values += [top, left]
            elif name == "target_size":
                width, height = self.target_size or size
                values += [height, width]
            else:
                default = AESTHETIC_NEGATIVE if negative else AESTHETIC_POSITIVE
                values.append(default if self.aesthetic_score is None else self.aesthetic_score)
        return values


@dataclass(frozen=True)
class Family:
    """One model family: how text becomes conditioning and what the UNet expects."""

    name: str  # stable id, used in messages, cache keys and `sdflow models`
    label: str  # for people: "SD 1.x"
    default_size: int  # the side its UNet was trained at, in pixels
    encoders: tuple[TextEncoderSlot, ...]
    context_dim: int  # width of the conditioning the UNet's cross-attention reads (full-size model)
    # SDXL reads the penultimate layer's raw hidden states (no final norm), concatenated over encoders;
    # SD 1.x/2.x read the last layer (after the final norm) unless clip_skip asks for an earlier one.
    penultimate: bool = False
    time_ids: tuple[str, ...] = ()  # SDXL's size / aesthetic conditioning, in UNet order
    latent_channels: int = 4
    denoiser_folder: str = "unet"  # the diffusers component holding the denoiser, and its class
    denoiser_class: str = "UNet2DConditionModel"
    # a guidance-distilled model's guidance input when no FluxGuidance sets one (Flux-dev: 3.5)
    default_guidance: float | None = None
    # A cheap preview of a latent: RGB = latent channels x these (one row per channel) + bias, about
    # [-1, 1]; the widely used linear fits of the SD 1.x and SDXL VAEs' decoders.
    latent_rgb: tuple[tuple[float, float, float], ...] = (
        (0.3512, 0.2297, 0.3227),
        (0.3250, 0.4974, 0.2350),
        (-0.2829, 0.1762, 0.2721),
        (-0.2120, -0.2616, -0.7177),
    )
    latent_rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    tiny_vae: str = "taesd"  # the stem of its latent space's TAESD files in vae_approx (ComfyUI's names)

    @property
    def text_encoders(self) -> int:
        return len(self.encoders)

    @property
    def pooled(self) -> bool:
        """The UNet also takes a pooled text embedding (with the time ids, as added_cond_kwargs)."""
        return bool(self.time_ids)

    @property
    def time_id_count(self) -> int:
        """How many numbers the time ids are (a size or a crop is two, a score one)."""
        return sum(1 if name == "aesthetic_score" else 2 for name in self.time_ids)

    def __str__(self) -> str:
        return self.label

    @property
    def flow(self) -> bool:
        """True for flow-matching families (their schedule is sdflow.models.flow's)."""
        return False

    @property
    def t5(self) -> bool:
        """True when a T5 encoder reads the prompt too (SD3, Flux)."""
        return False

    def skipped_steps(self, steps: int, strength: float) -> int:
        """Steps img2img skips at ``strength``, as the family's diffusers img2img pipeline rounds them
        (SD 1.x/2.x/SDXL keep int(steps * strength))."""
        return steps - min(int(steps * strength), steps)

    def denoiser(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module DenoiseLoop calls as a UNet (``module(x, t, encoder_hidden_states=...,
        added_cond_kwargs=..., return_dict=False)``): the UNet itself here."""
        return module

    def timestep_kwargs(
        self, config: dict[str, Any], steps: int, latent_size: tuple[int, int] | None
    ) -> dict[str, Any]:
        """Extra ``set_timesteps`` arguments for a latent of ``latent_size`` (h, w): none for UNets."""
        return {}

    def added_cond_kwargs(
        self,
        conditionings: list[tuple[Any, bool]],
        batch: int,
        size: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, torch.Tensor] | None:
        """The UNet's extra inputs for ``conditionings`` [(Conditioning, is_negative)...] in batch order,
        each repeated to ``batch`` rows, for a picture of ``size`` (width, height); None if it takes none."""
        if not self.time_ids:
            return None
        pooled, time_ids = [], []
        for conditioning, negative in conditionings:
            # SDXL revision (unCLIPConditioning): the pictures' embeds stand for the pooled text embedding
            embeds = revision_pooled(conditioning.unclip) if conditioning.unclip else conditioning.pooled
            pooled.append(embeds.repeat_interleave(batch // embeds.shape[0], 0))
            ids = conditioning.sizes.ids(self.time_ids, size, negative)
            time_ids.append(torch.tensor([ids], dtype=dtype).repeat(batch, 1))
        return {
            "text_embeds": torch.cat(pooled).to(device, dtype),
            "time_ids": torch.cat(time_ids).to(device, dtype),
        }


_CLIP_L = TextEncoderSlot("text_encoder", "tokenizer")
_SDXL_RGB = {
    "latent_rgb": (
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    "latent_rgb_bias": (0.1084, -0.0175, -0.0011),
}

SD15 = Family("sd15", "SD 1.x", 512, (_CLIP_L,), 768)
SD2 = Family("sd2", "SD 2.x", 768, (_CLIP_L,), 1024)
SDXL = Family(
    "sdxl",
    "SDXL",
    1024,
    (_CLIP_L, TextEncoderSlot("text_encoder_2", "tokenizer_2", projection=True)),
    2048,
    penultimate=True,
    time_ids=SIZE_IDS,
    **_SDXL_RGB,
    tiny_vae="taesdxl",
)
SDXL_REFINER = Family(
    "sdxl_refiner",
    "SDXL refiner",
    1024,
    (TextEncoderSlot("text_encoder_2", "tokenizer_2", projection=True),),
    1280,
    penultimate=True,
    time_ids=AESTHETIC_IDS,
    **_SDXL_RGB,
    tiny_vae="taesdxl",
)


@dataclass(frozen=True)
class JointText:
    """How a diffusion transformer's text conditioning is built from its encoders (as diffusers'
    SD3 and Flux pipelines build it), by index into the family's encoders."""

    # CLIP encoders whose penultimate hidden states are joined along the features, zero-padded to
    # T5's width and put before T5's tokens (SD3: both CLIPs; Flux: none, T5's tokens alone)
    sequence: tuple[int, ...]
    # encoders whose pooled outputs are concatenated: a projecting CLIP's text_embeds, else its
    # pooler output (SD3: CLIP-L + CLIP-G projections; Flux: CLIP-L's pooler output)
    pooled: tuple[int, ...]
    t5: int  # the T5 encoder
    t5_length: int  # T5 tokens (diffusers' max_sequence_length default: SD3 256, Flux 512)
    clip_g: int | None = None  # the CLIP-G encoder (SD3), which may read a prompt of its own


@dataclass(frozen=True)
class FlowFamily(Family):
    """A flow-matching diffusion transformer (SD3, Flux): x = (1 - s) x0 + s n, velocity prediction."""

    text: JointText = JointText((), (), 0, 256)
    transformer: str = ""  # "sd3" | "flux": the call convention (sdflow.models.flow.DENOISERS)
    # Flux-dev's schedule: sigmas linspace(1, 1/n, n) passed to set_timesteps (SD3: the scheduler's own)
    linear_sigmas: bool = False

    @property
    def flow(self) -> bool:
        return True

    @property
    def t5(self) -> bool:
        return True

    def skipped_steps(self, steps: int, strength: float) -> int:
        """SD3's and Flux's img2img pipelines skip int(steps - steps * strength)."""
        return int(max(steps - min(steps * strength, steps), 0))

    def denoiser(self, module: torch.nn.Module) -> torch.nn.Module:
        from sdflow.models import flow

        return flow.DENOISERS[self.transformer](module)

    def timestep_kwargs(
        self, config: dict[str, Any], steps: int, latent_size: tuple[int, int] | None
    ) -> dict[str, Any]:
        from sdflow.models import flow

        return flow.timestep_kwargs(self, config, steps, latent_size)

    def added_cond_kwargs(
        self,
        conditionings: list[tuple[Any, bool]],
        batch: int,
        size: tuple[int, int],
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, torch.Tensor] | None:
        """The pooled projections (and Flux's distilled guidance, float32), in batch order."""
        pooled, guidance = [], []
        for conditioning, _ in conditionings:
            embeds = conditioning.pooled
            pooled.append(embeds.repeat_interleave(batch // embeds.shape[0], 0))
            value = getattr(conditioning, "guidance", None)
            guidance.append(self.default_guidance if value is None else value)
        added = {"pooled_projections": torch.cat(pooled).to(device, dtype)}
        if self.default_guidance is not None:
            rows = [torch.full((batch,), float(g), dtype=torch.float32) for g in guidance]
            added["guidance"] = torch.cat(rows).to(device)
        return added


_CLIP_G = TextEncoderSlot("text_encoder_2", "tokenizer_2", projection=True)
_T5_SLOT = {"encoder_class": "T5EncoderModel", "tokenizer_class": "T5TokenizerFast"}
# The 16-channel VAEs' linear latent-to-RGB fits (the ones ComfyUI's previews use)
_SD3_RGB = {
    "latent_rgb": (
        (-0.0922, -0.0175, 0.0749),
        (0.0311, 0.0633, 0.0954),
        (0.1994, 0.0927, 0.0458),
        (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496),
        (-0.0006, 0.1104, 0.0309),
        (0.0978, 0.0306, 0.0427),
        (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.002, 0.0669),
        (-0.0488, 0.013, -0.0268),
        (0.0922, 0.0988, 0.0951),
        (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895),
        (-0.0069, -0.003, -0.081),
        (-0.0596, -0.0465, -0.0293),
        (-0.1448, -0.1463, -0.1189),
    ),
    "latent_rgb_bias": (0.2394, 0.2135, 0.1925),
}
_FLUX_RGB = {
    "latent_rgb": (
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.021, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.016, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.025, 0.118),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.028, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    "latent_rgb_bias": (-0.0329, -0.0718, -0.0851),
}

SD3 = FlowFamily(
    "sd3",
    "SD3",
    1024,
    (
        TextEncoderSlot("text_encoder", "tokenizer", projection=True),
        _CLIP_G,
        TextEncoderSlot("text_encoder_3", "tokenizer_3", **_T5_SLOT),
    ),
    4096,
    penultimate=True,
    latent_channels=16,
    denoiser_folder="transformer",
    denoiser_class="SD3Transformer2DModel",
    text=JointText(sequence=(0, 1), pooled=(0, 1), t5=2, t5_length=256, clip_g=1),
    transformer="sd3",
    **_SD3_RGB,
    tiny_vae="taesd3",
)
FLUX = FlowFamily(
    "flux",
    "Flux",
    1024,
    (_CLIP_L, TextEncoderSlot("text_encoder_2", "tokenizer_2", **_T5_SLOT)),
    4096,
    latent_channels=16,
    denoiser_folder="transformer",
    denoiser_class="FluxTransformer2DModel",
    text=JointText(sequence=(), pooled=(0,), t5=1, t5_length=512),
    transformer="flux",
    linear_sigmas=True,
    default_guidance=3.5,
    **_FLUX_RGB,
    tiny_vae="taef1",
)

FAMILIES: dict[str, Family] = {f.name: f for f in (SD15, SD2, SDXL, SDXL_REFINER, SD3, FLUX)}


def get(name: str) -> Family:
    """The family called ``name`` (KeyError for an unknown one)."""
    return FAMILIES[name]
