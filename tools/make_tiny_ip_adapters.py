"""Tiny random CLIP vision encoders, IP-Adapters (plain and plus) and an unCLIP checkpoint for the
built-in tiny checkpoints, for tests.

The IP-Adapter files use h94/IP-Adapter's layout (``image_proj.*`` and ``ip_adapter.N.to_k_ip`` /
``to_v_ip``, N = 1, 3, 5... over the UNet's attention processors), sized for tiny-sd15 (cross-attention
32) and tiny-sdxl (80); the image encoder is a transformers folder and the same weights as one
.safetensors, as ComfyUI's clip_vision folder keeps them. Laid out for diffusers' ``load_ip_adapter``:
``ROOT/models/NAME.safetensors`` with ``ROOT/models/image_encoder``.

The unCLIP checkpoint (``make_unclip``) is a StableUnCLIPImg2ImgPipeline folder: tiny-sd15's parts
(its text encoder with GELU, as SD 2.x's OpenCLIP, so it is detected as SD 2.x), its UNet with a random
``projection`` class embedding reading [image embeds, noise-level embedding], the tiny image encoder,
a random image normaliser and the squaredcos_cap_v2 noising scheduler.

    python tools/make_tiny_ip_adapters.py OUT_DIR
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
VISION = {  # tiny, but of the shapes sdflow's single-file reading infers (64-wide heads, gelu)
    "hidden_size": 64,
    "intermediate_size": 128,
    "projection_dim": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 1,
    "image_size": 32,
    "patch_size": 8,
    "hidden_act": "gelu",
}
PLAIN_TOKENS = 4
PLUS_QUERIES = 6
PLUS_DEPTH = 4  # what diffusers' loader builds
SPREAD = 0.5  # the k/v layers' random scale: large enough that the picture changes


def image_encoder(seed: int = 0) -> torch.nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)).eval()


def _random(*shape: int, scale: float = 0.2) -> torch.Tensor:
    return torch.randn(*shape) * scale


def attention_layers(builtin: str) -> dict[str, torch.Tensor]:
    """``N.to_k_ip.weight`` / ``N.to_v_ip.weight`` for every cross-attention layer of the built-in."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(BUILTIN / builtin / "unet")
    layers, number = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        to_k = unet.get_submodule(name[: -len(".processor")]).to_k.weight
        layers[f"{number}.to_k_ip.weight"] = _random(*to_k.shape, scale=SPREAD)
        layers[f"{number}.to_v_ip.weight"] = _random(*to_k.shape, scale=SPREAD)
        number += 2
    return layers


def plain_projection(cross: int) -> dict[str, torch.Tensor]:
    width = VISION["projection_dim"]
    return {
        "proj.weight": _random(PLAIN_TOKENS * cross, width),
        "proj.bias": _random(PLAIN_TOKENS * cross),
        "norm.weight": 1 + _random(cross),
        "norm.bias": _random(cross),
    }


def plus_projection(cross: int) -> dict[str, torch.Tensor]:
    """h94's Resampler names: layers.i.0 the attention (norm1, norm2, to_q, to_kv, to_out), layers.i.1
    the feed-forward (LayerNorm, Linear, GELU, Linear)."""
    embed, hidden = VISION["hidden_size"], 64
    state = {
        "latents": _random(1, PLUS_QUERIES, hidden, scale=1.0),
        "proj_in.weight": _random(hidden, embed),
        "proj_in.bias": _random(hidden),
        "proj_out.weight": _random(cross, hidden),
        "proj_out.bias": _random(cross),
        "norm_out.weight": 1 + _random(cross),
        "norm_out.bias": _random(cross),
    }
    for i in range(PLUS_DEPTH):
        for norm in ("0.norm1", "0.norm2", "1.0"):
            state[f"layers.{i}.{norm}.weight"] = 1 + _random(hidden)
            state[f"layers.{i}.{norm}.bias"] = _random(hidden)
        state[f"layers.{i}.0.to_q.weight"] = _random(hidden, hidden)
        state[f"layers.{i}.0.to_kv.weight"] = _random(2 * hidden, hidden)
        state[f"layers.{i}.0.to_out.weight"] = _random(hidden, hidden)
        state[f"layers.{i}.1.1.weight"] = _random(4 * hidden, hidden)
        state[f"layers.{i}.1.3.weight"] = _random(hidden, 4 * hidden)
    return state


def adapter(builtin: str, kind: str, seed: int) -> dict[str, dict[str, torch.Tensor]]:
    """{"image_proj": ..., "ip_adapter": ...} of a tiny IP-Adapter for the built-in."""
    torch.manual_seed(seed)
    layers = attention_layers(builtin)
    cross = next(iter(layers.values())).shape[1]
    projection = plain_projection(cross) if kind == "plain" else plus_projection(cross)
    return {"image_proj": projection, "ip_adapter": layers}


def write_safetensors(parts: dict[str, dict[str, torch.Tensor]], path: Path) -> Path:
    flat = {f"{part}.{k}": v.contiguous() for part, tensors in parts.items() for k, v in tensors.items()}
    save_file(flat, str(path))
    return path


def make_all(out: Path) -> dict[str, Path]:
    """Every tiny file: the encoder (folder, single file), plain/plus adapters for sd15 and sdxl
    (safetensors; the sd15 plus also as a .bin pickle)."""
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    encoder = image_encoder()
    encoder.save_pretrained(models / "image_encoder", safe_serialization=True)
    single = out / "clip_vision_tiny.safetensors"
    shutil.copy(models / "image_encoder" / "model.safetensors", single)
    paths = {"encoder": models / "image_encoder", "encoder_file": single, "root": out}
    for index, (builtin, kind) in enumerate(
        [("tiny-sd15", "plain"), ("tiny-sd15", "plus"), ("tiny-sdxl", "plain"), ("tiny-sdxl", "plus")]
    ):
        family = "sd15" if builtin == "tiny-sd15" else "sdxl"
        parts = adapter(builtin, kind, seed=index + 1)
        name = f"{family}-{kind}"
        paths[name] = write_safetensors(parts, models / f"ip-adapter-{name}.safetensors")
        if name == "sd15-plus":
            paths["sd15-plus-bin"] = models / "ip-adapter-sd15-plus.bin"
            torch.save(parts, paths["sd15-plus-bin"])
    return paths


def make_unclip(out: Path, seed: int = 0) -> Path:
    """A tiny random SD 2.x unCLIP checkpoint folder at ``out``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    source = BUILTIN / "tiny-sd15"
    width = VISION["projection_dim"]
    base = UNet2DConditionModel.from_pretrained(source / "unet")
    torch.manual_seed(seed)
    config = {
        **base.config,
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": 2 * width,
    }
    unet = UNet2DConditionModel.from_config(config)
    unet.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        for parameter in unet.class_embedding.parameters():
            parameter.normal_(0.0, 0.5)
    text_config = CLIPTextConfig.from_pretrained(source / "text_encoder")
    text_config.hidden_act = "gelu"
    text_encoder = CLIPTextModel(text_config)
    text_encoder.load_state_dict(CLIPTextModel.from_pretrained(source / "text_encoder").state_dict())
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=width)
    with torch.no_grad():
        normalizer.mean.normal_(0.0, 0.3)
        normalizer.std.uniform_(0.5, 1.5)
    pipe = StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size=VISION["image_size"], crop_size=VISION["image_size"]),
        image_encoder=image_encoder(seed),
        image_normalizer=normalizer,
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        tokenizer=CLIPTokenizer.from_pretrained(source / "tokenizer"),
        text_encoder=text_encoder,
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(source / "scheduler"),
        vae=AutoencoderKL.from_pretrained(source / "vae"),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    return out


if __name__ == "__main__":
    for name, path in make_all(Path(sys.argv[1])).items():
        print(name, path)
