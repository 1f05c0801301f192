"""IP-Adapter in the UNet: attention processors that also attend to image tokens, and the tokens fed
in the DenoiseLoop's batched CFG call.

Each cross-attention layer (attn2) gets diffusers' IPAdapterAttnProcessor2_0, which reads
``encoder_hidden_states`` as ``(text, [image tokens per adapter])`` and adds ``scale * attention(query,
image keys, image values)`` before the output projection; a scale of 0 skips an adapter, so outside
its start..end window (diffusers' controlnet_keep rule, as ApplyControlNet) an adapter changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0

from sdflow.models.ip_adapter import IPAdapterWeights
from sdflow.models.patch import owned, shallow
from sdflow.nodes.ops.schedule_window import step_in_window
from sdflow.nodes.types import Model
from sdflow.nodes.types_vision import ImagePrompt


class LayerMismatch(ValueError):
    """An IP-Adapter made for a UNet of another shape."""


class ImagePromptProcessor(IPAdapterAttnProcessor2_0):
    """diffusers' IP-Adapter processor; called with text alone (a UNet call that brings no image
    tokens) it attends to the text alone."""

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not isinstance(encoder_hidden_states, tuple):
            return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def cross_attention_layers(unet: torch.nn.Module) -> list[tuple[str, int]]:
    """(module path, IP-Adapter key number) of each cross-attention layer, numbered as diffusers'
    _convert_ip_adapter_attn_to_diffusers counts them (1, 3, 5... over the processors' order)."""
    found, number = [], 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor") or "motion_modules" in name:
            continue
        found.append((name[: -len(".processor")], number))
        number += 2
    return found


def installed(model: Model, adapter: IPAdapterWeights, prompt: ImagePrompt) -> Model:
    """A copy of ``model`` whose cross-attention layers also attend to ``prompt``'s image tokens (the
    model's earlier image prompts kept); ``model`` is left unchanged."""
    unet = model.unet
    layers = cross_attention_layers(unet)
    if len(layers) != len(adapter.layers) or any(n not in adapter.layers for _, n in layers):
        raise LayerMismatch(
            f"this IP-Adapter has {len(adapter.layers)} cross-attention layers but the model has "
            f"{len(layers)}: it was made for another kind of model"
        )
    root = shallow(unet)
    fresh = {id(root)}
    processors = []
    for path, number in layers:
        module = unet.get_submodule(path)
        key, value = adapter.layers[number]
        if tuple(key.shape) != tuple(module.to_k.weight.shape):
            raise LayerMismatch(
                f"this IP-Adapter's layer {number} is {tuple(key.shape)} but the model's is "
                f"{tuple(module.to_k.weight.shape)}: it was made for another kind of model"
            )
        before = module.processor if isinstance(module.processor, ImagePromptProcessor) else None
        tokens = ([*before.num_tokens] if before else []) + [adapter.tokens]
        processor = ImagePromptProcessor(key.shape[0], key.shape[1], tokens, [0.0] * len(tokens))
        old_k = list(before.to_k_ip) if before else []
        old_v = list(before.to_v_ip) if before else []
        processor.to_k_ip = torch.nn.ModuleList([*old_k, _linear(key)])
        processor.to_v_ip = torch.nn.ModuleList([*old_v, _linear(value)])
        owned(root, fresh, path).processor = processor
        processors.append(processor)
    prompt = replace(prompt, processors=tuple(processors))
    return replace(model, unet=root, image_prompts=(*model.image_prompts, prompt))


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    return layer


@dataclass
class Feed:
    """A loop's image tokens, in its batch order: [negative x batch, positive x batch] and positive alone."""

    prompts: tuple[ImagePrompt, ...]
    both: list[torch.Tensor]
    positive: list[torch.Tensor]

    def states(self, text: torch.Tensor, guiding: bool, index: int, total: int) -> tuple:
        """The UNet's ``encoder_hidden_states`` for step ``index``: (text, tokens), each adapter's
        processors scaled to its weight inside its window and to 0 outside."""
        scales = [
            p.weight if step_in_window(index, total, p.start_percent, p.end_percent) else 0.0
            for p in self.prompts
        ]
        for processor in self.prompts[-1].processors:
            processor.scale = scales
        return (text, self.both if guiding else self.positive)


def feed(model: Model, batch: int, guide: bool, device: torch.device, dtype: torch.dtype) -> Feed | None:
    """The model's image tokens repeated to the latent batch (None: no image prompts)."""
    if not model.image_prompts:
        return None
    both, positive = [], []
    for prompt in model.image_prompts:
        neg = prompt.negative.to(device, dtype).expand(batch, -1, -1)
        pos = prompt.positive.to(device, dtype).expand(batch, -1, -1)
        both.append(torch.cat([neg, pos]) if guide else pos)
        positive.append(pos)
    return Feed(model.image_prompts, both, positive)


def class_labels(
    model: Model, halves: list[Any], batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor | None:
    """An unCLIP UNet's class labels for the CFG halves [negative, positive] (or [positive]), each
    repeated to ``batch`` rows (None: the model reads none). A side without unCLIPConditioning reads
    zeros, as diffusers' negative and ComfyUI's conditioning without a picture."""
    noising = model.image_noising
    if noising is None:
        return None
    rows = [noising.class_labels(half.unclip, device, dtype).expand(batch, -1) for half in halves]
    return torch.cat(rows)


def unclip_problem(model: Model, halves: list[Any]) -> str | None:
    """Why the conditioning's unCLIP pictures cannot reach this model (or the model needs pictures
    it cannot have), or None."""
    noising = model.image_noising
    if noising is None and getattr(model.unet.config, "class_embed_type", None) is not None:
        return (
            "this UNet reads class labels (an unCLIP model) but its checkpoint has no image_encoder, "
            "image_normalizer and image_noising_scheduler to make them (a StableUnCLIPImg2ImgPipeline "
            "folder has, or an unCLIP single file its embedder and noise_augmentor)"
        )
    if not any(half.unclip for half in halves):
        return None
    if noising is None:
        if model.family.pooled:
            return None  # SDXL revision: the family's pooled embedding reads them
        return (
            "this conditioning went through unCLIPConditioning but the model reads no image embeddings: "
            "use an unCLIP checkpoint (SD 2.1 unCLIP) or SDXL (revision)"
        )
    width = noising.mean.shape[-1]
    for half in halves:
        for entry in half.unclip:
            if entry.embeds.shape[-1] != width:
                return (
                    f"the CLIP vision output is {entry.embeds.shape[-1]} wide but this unCLIP model reads "
                    f"{width}: encode with the checkpoint's own clip_vision"
                )
    return None
