"""IP-Adapter files (h94/IP-Adapter layout): an image projection and per-cross-attention k/v layers.

A file holds ``image_proj.*`` (plain: ``proj`` Linear + ``norm`` LayerNorm over CLIP's image embeds;
plus: a Resampler over CLIP's penultimate hidden states) and ``ip_adapter.N.to_k_ip`` /
``ip_adapter.N.to_v_ip``, N = 1, 3, 5... counting the UNet's attention processors in diffusers' order
(every cross-attention layer, attn2, is an odd one). A .bin keeps the two parts as nested dicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sdflow.models import weights

PLAIN_TOKENS = 4  # the plain projection's image tokens (diffusers' num_image_text_embeds)
RESAMPLER_HEAD = 64
_LAYER = re.compile(r"layers\.(\d+)\.")
# the h94 Resampler's names -> diffusers' IPAdapterPlusImageProjection's, within one layer
_RESAMPLER_NAMES = {
    "0.norm1": "ln0",
    "0.norm2": "ln1",
    "0.to_q": "attn.to_q",
    "0.to_out": "attn.to_out.0",
    "1.0": "ff.0",
    "1.1": "ff.1.net.0.proj",
    "1.3": "ff.1.net.2",
}


class IPAdapterFileError(ValueError):
    """A file that is not an IP-Adapter of a kind sdflow reads."""


@dataclass(frozen=True, eq=False)
class IPAdapterWeights:
    """A loaded IP-Adapter: its projection (to image tokens) and the k/v layers by processor number."""

    kind: str  # "plain" | "plus"
    projection: torch.nn.Module
    layers: dict[int, tuple[torch.Tensor, torch.Tensor]]  # N -> (to_k_ip weight, to_v_ip weight)
    tokens: int  # image tokens per picture
    cross_attention_dim: int
    projection_input_width: int  # CLIP's projection_dim (plain) or hidden size (plus)

    @property
    def reads(self) -> str:
        """What the projection reads of the CLIP vision output."""
        return "penultimate" if self.kind == "plus" else "image_embeds"


def read(path: Path, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(image_proj tensors, ip_adapter tensors) of a .safetensors or (with the opt-in) a .bin."""
    if weights.is_pickle(path):
        if not allow_pickle:
            raise weights.WeightFileError(weights.pickle_refusal(path))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several kinds for a bad pickle
            raise weights.WeightFileError(
                f"'{path}' could not be read as a weights-only pickle: {exc}"
            ) from None
        flat = {}
        for part in ("image_proj", "ip_adapter"):
            for key, value in (state.get(part) or {}).items() if isinstance(state, dict) else ():
                flat[f"{part}.{key}"] = value
    else:
        flat, _ = weights.read_all(path)
    parts: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, rest = key.partition(".")
        if part in parts and isinstance(value, torch.Tensor):
            parts[part][rest] = value
    if not parts["image_proj"] or not parts["ip_adapter"]:
        raise IPAdapterFileError(
            f"'{path.name}' is not an IP-Adapter: it needs image_proj.* and ip_adapter.* tensors"
        )
    return parts["image_proj"], parts["ip_adapter"]


def load(
    path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False
) -> IPAdapterWeights:
    """The IP-Adapter in ``path`` with its projection built and on ``device``."""
    projection_state, attention = read(path, allow_pickle)
    if "proj.weight" in projection_state:
        kind, projection, tokens = "plain", *_plain(projection_state)
    elif "latents" in projection_state and "proj_in.weight" in projection_state:
        kind, projection, tokens = "plus", *_resampler(projection_state)
    else:
        names = ", ".join(sorted(projection_state)[:4])
        raise IPAdapterFileError(
            f"'{path.name}': an image projection of a kind sdflow does not read yet ({names}...): "
            "the plain and plus IP-Adapters are supported"
        )
    layers = {}
    for key, value in attention.items():
        number, _, name = key.partition(".")
        if name == "to_k_ip.weight" and f"{number}.to_v_ip.weight" in attention:
            layers[int(number)] = (value, attention[f"{number}.to_v_ip.weight"])
    if not layers:
        raise IPAdapterFileError(f"'{path.name}': no ip_adapter.N.to_k_ip / to_v_ip weights")
    layers = {n: (k.to(device, dtype), v.to(device, dtype)) for n, (k, v) in layers.items()}
    cross = next(iter(layers.values()))[0].shape[1]
    reads = projection_state["proj.weight" if kind == "plain" else "proj_in.weight"].shape[1]
    return IPAdapterWeights(kind, projection.to(device, dtype).eval(), layers, tokens, cross, reads)


def _plain(state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, int]:
    from diffusers.models.embeddings import ImageProjection

    weight = state["proj.weight"]
    cross = weight.shape[0] // PLAIN_TOKENS
    module = ImageProjection(
        image_embed_dim=weight.shape[1], cross_attention_dim=cross, num_image_text_embeds=PLAIN_TOKENS
    )
    renamed = {
        key.replace("proj.", "image_embeds.", 1) if key.startswith("proj.") else key: v
        for key, v in state.items()
    }
    _load_strict(module, renamed)
    return module, PLAIN_TOKENS


def _resampler(state: dict[str, torch.Tensor]) -> tuple[torch.nn.Module, int]:
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _LAYER.match(key)
        if match is None:
            renamed[key] = value
            continue
        head, rest = match.group(0), key[match.end() :]
        if rest.startswith("0.to_kv."):
            suffix = rest[len("0.to_kv.") :]
            k, v = value.chunk(2, dim=0)
            renamed[f"{head}attn.to_k.{suffix}"], renamed[f"{head}attn.to_v.{suffix}"] = k, v
            continue
        for old, new in _RESAMPLER_NAMES.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old) :]
                break
        renamed[head + rest] = value
    latents = state["latents"]
    depth = 1 + max(int(m.group(1)) for k in state if (m := _LAYER.match(k)))
    module = IPAdapterPlusImageProjection(
        embed_dims=state["proj_in.weight"].shape[1],
        output_dims=state["proj_out.weight"].shape[0],
        hidden_dims=latents.shape[2],
        depth=depth,
        dim_head=RESAMPLER_HEAD,
        heads=state["layers.0.0.to_q.weight"].shape[0] // RESAMPLER_HEAD,
        num_queries=latents.shape[1],
        ffn_ratio=state["layers.0.1.1.weight"].shape[0] / latents.shape[2],
    )
    _load_strict(module, renamed)
    return module, latents.shape[1]


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise IPAdapterFileError(
            f"the image projection does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def describe(path: Path) -> str:
    """'IP-Adapter plus, 16 tokens, cross-attention 768' from the safetensors header."""
    if weights.is_pickle(path):
        return "pickle (not inspected; loads only with allow_pickle)"
    try:
        shapes = weights.read_header(path).shapes()
    except (OSError, weights.WeightFileError) as exc:
        return f"unreadable: {exc}"
    if "image_proj.proj.weight" in shapes:
        cross = shapes["image_proj.proj.weight"][0] // PLAIN_TOKENS
        return f"IP-Adapter, {PLAIN_TOKENS} tokens, cross-attention {cross}"
    if "image_proj.latents" in shapes:
        latents = shapes["image_proj.latents"]
        cross = shapes.get("image_proj.proj_out.weight", (0,))[0]
        return f"IP-Adapter plus, {latents[1]} tokens, cross-attention {cross}"
    return "not a plain or plus IP-Adapter"
