"""The architectures train.py can train on the shapes data: SD 1.x, SDXL base and SDXL refiner.

Each one builds its UNet and text encoders, turns token ids into what its UNet reads (cross-attention
states, plus SDXL's pooled text embedding and size/aesthetic time ids) exactly as diffusers' pipelines
do at inference, and saves itself as the matching diffusers pipeline folder.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from tokenizer import VOCAB_SIZE, save_byte_tokenizer
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}
SWAP_SAFE = {"clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True}
IMAGE_SIZE = 64
# SDXL's size conditioning at the defaults diffusers uses for a 64x64 picture (original = target =
# the picture's size, no crop); the refiner's aesthetic score is drawn at random in training so that
# both diffusers' defaults (6.0 positive, 2.5 negative) are in distribution and carry no content.
BASE_TIME_IDS = (IMAGE_SIZE, IMAGE_SIZE, 0, 0, IMAGE_SIZE, IMAGE_SIZE)
AESTHETIC_RANGE = (2.0, 7.0)


def text_config(hidden: int, projection: int) -> CLIPTextConfig:
    """A small CLIP text transformer over the 514 byte-level tokens."""
    return CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=VOCAB_SIZE - 2,
        eos_token_id=VOCAB_SIZE - 1,
        pad_token_id=VOCAB_SIZE - 1,
    )


def sdxl_unet(channels: tuple[int, int], context: int, time_ids: int, pooled: int) -> UNet2DConditionModel:
    """An SDXL-style UNet: no attention at full resolution, linear projections, text_time embedding."""
    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=channels,
        layers_per_block=1,
        transformer_layers_per_block=(1, 1),
        cross_attention_dim=context,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=16,
        addition_embed_type="text_time",
        addition_time_embed_dim=16,
        projection_class_embeddings_input_dim=pooled + time_ids * 16,
    )


@dataclass
class Arch:
    """One trainable architecture: its parts and how token ids become UNet inputs."""

    name: str
    unet: UNet2DConditionModel
    encoders: list[torch.nn.Module]  # trained jointly with the UNet unless frozen
    tokenizers: list[CLIPTokenizer]
    max_timestep: int = SCHEDULE["num_train_timesteps"]  # train on t < this (the refiner: low noise)

    def condition(self, ids: list[torch.Tensor]) -> tuple[torch.Tensor, dict | None]:
        """Cross-attention states and added_cond_kwargs for one batch of ids per tokenizer."""
        if self.name == "sd15":
            return self.encoders[0](ids[0])[0], None
        states, pooled = [], None
        for encoder, encoder_ids in zip(self.encoders, ids, strict=True):
            out = encoder(encoder_ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0] if out[0].ndim == 2 else pooled
        batch = ids[0].shape[0]
        if self.name == "sdxl":
            time_ids = torch.tensor([BASE_TIME_IDS], dtype=torch.float32).repeat(batch, 1)
        else:
            low, high = AESTHETIC_RANGE
            aesthetic = low + (high - low) * torch.rand(batch, 1)
            size = torch.tensor([BASE_TIME_IDS[:4]], dtype=torch.float32).repeat(batch, 1)
            time_ids = torch.cat([size, aesthetic], dim=1)
        return torch.cat(states, dim=-1), {"text_embeds": pooled, "time_ids": time_ids}

    def save(self, out: Path, vae: AutoencoderKL, unet: UNet2DConditionModel, encoders, note: dict) -> None:
        """Write the diffusers pipeline folder in fp16 safetensors (copies: training goes on)."""
        vae, unet = copy.deepcopy(vae), copy.deepcopy(unet)
        encoders = [copy.deepcopy(e) for e in encoders]
        if self.name == "sd15":
            scheduler = DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
            pipe = StableDiffusionPipeline(
                vae=vae,
                text_encoder=encoders[0],
                tokenizer=self.tokenizers[0],
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        else:
            # SDXL's own scheduler config: Euler, leading spacing, steps offset 1, and (kept for
            # schedulers swapped in with from_config, as SDXL's has them) no DDIM sample clipping.
            scheduler = EulerDiscreteScheduler.from_config(
                {**SCHEDULE, "steps_offset": 1, "timestep_spacing": "leading", **SWAP_SAFE}
            )
            if self.name == "sdxl":
                pipe = StableDiffusionXLPipeline(
                    vae=vae,
                    text_encoder=encoders[0],
                    text_encoder_2=encoders[1],
                    tokenizer=self.tokenizers[0],
                    tokenizer_2=self.tokenizers[1],
                    unet=unet,
                    scheduler=scheduler,
                    force_zeros_for_empty_prompt=False,  # trained with "" as the empty caption
                )
            else:
                pipe = StableDiffusionXLImg2ImgPipeline(
                    vae=vae,
                    text_encoder=None,
                    text_encoder_2=encoders[0],
                    tokenizer=None,
                    tokenizer_2=self.tokenizers[0],
                    unet=unet,
                    scheduler=scheduler,
                    requires_aesthetics_score=True,
                    force_zeros_for_empty_prompt=False,
                )
        pipe.to(torch.float16)
        pipe.save_pretrained(out, safe_serialization=True)
        (out / "training.json").write_text(json.dumps(note, indent=2) + "\n")


def sd15(out: Path) -> Arch:
    """The SD 1.x-architecture shapes model (builtin:shapes)."""
    tokenizer = save_byte_tokenizer(out / "tokenizer")
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(64, 128),
        layers_per_block=1,
        cross_attention_dim=64,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    text = text_config(64, 64)
    text.intermediate_size = 256
    return Arch("sd15", unet, [CLIPTextModel(text)], [tokenizer])


def sdxl(out: Path, init: Path | None) -> Arch:
    """SDXL base: CLIP-L-like (32-d) and bigG-like (64-d, projected) encoders, 96-d context.

    With ``init`` (the SD 1.x shapes folder), every UNet tensor that lines up with its UNet starts
    from it (resnets, time embedding, mid-block attention; its text states land in the bigG columns),
    the bigG-like encoder starts as its text encoder, and the new pooled/time-id embedding starts at
    zero, so training begins from a model that already denoises these latents."""
    tokenizers = [
        save_byte_tokenizer(out / "tokenizer"),
        save_byte_tokenizer(out / "tokenizer_2", pad_token="!"),
    ]
    encoders = [CLIPTextModel(text_config(32, 32)), CLIPTextModelWithProjection(text_config(64, 64))]
    unet = sdxl_unet((64, 128), context=96, time_ids=6, pooled=64)
    if init is not None:
        source = UNet2DConditionModel.from_pretrained(init, subfolder="unet", torch_dtype=torch.float32)
        copied = load_matching(unet, source.state_dict())
        text = CLIPTextModel.from_pretrained(init, subfolder="text_encoder", torch_dtype=torch.float32)
        copied += load_matching(encoders[1], text.state_dict())
        with torch.no_grad():
            unet.add_embedding.linear_2.weight.zero_()
            unet.add_embedding.linear_2.bias.zero_()
        print(f"initialised {copied} tensors from {init}", flush=True)
    return Arch("sdxl", unet, encoders, tokenizers)


def sdxl_refiner(out: Path, base: Path) -> Arch:
    """SDXL refiner: the trained base re-shaped to the refiner's inputs, trained on low noise only.

    Its one encoder is the base's bigG-like encoder, frozen (SDXL's refiner shares it too); its UNet
    starts as the base's, keeping the bigG columns of cross-attention and the time-id weights of
    the sizes and crop (the aesthetic score's start small and random)."""
    tokenizer = save_byte_tokenizer(out / "tokenizer_2", pad_token="!")
    encoder = CLIPTextModelWithProjection.from_pretrained(
        base, subfolder="text_encoder_2", torch_dtype=torch.float32
    )
    encoder.requires_grad_(False)
    unet = sdxl_unet((64, 128), context=64, time_ids=5, pooled=64)
    source = UNet2DConditionModel.from_pretrained(base, subfolder="unet", torch_dtype=torch.float32)
    copied = load_matching(unet, source.state_dict())
    print(f"initialised {copied} tensors from {base}", flush=True)
    return Arch("sdxl_refiner", unet, [encoder], [tokenizer], max_timestep=400)


# Cross-attention keys/values read [CLIP-L states | bigG states]: the bigG part is the right end.
_RIGHT_ALIGNED = ("attn2.to_k.weight", "attn2.to_v.weight")


def load_matching(model: torch.nn.Module, source: dict[str, torch.Tensor]) -> int:
    """Copy ``source`` tensors into ``model``'s same-named ones where they line up; return how many.

    Same shape: copied. A 1x1 convolution for a linear layer: reshaped. A matrix with other input
    columns: the overlap, right-aligned for cross-attention keys/values (the bigG states are the
    last columns), left-aligned otherwise (the pooled embedding and the first time ids come first)."""
    copied = 0
    with torch.no_grad():
        for name, target in model.state_dict().items():
            tensor = source.get(name)
            if tensor is None:
                tensor = source.get("text_model." + name)  # CLIPTextModel vs ...WithProjection layout
            if tensor is None:
                continue
            if tensor.numel() == target.numel() and tensor.shape != target.shape:
                tensor = tensor.reshape(target.shape)
            if tensor.shape == target.shape:
                target.copy_(tensor)
            elif tensor.ndim == 2 and target.ndim == 2 and tensor.shape[0] == target.shape[0]:
                width = min(tensor.shape[1], target.shape[1])
                if name.endswith(_RIGHT_ALIGNED):
                    target[:, -width:] = tensor[:, -width:]
                else:
                    target[:, :width] = tensor[:, :width]
            else:
                continue
            copied += 1
    return copied
