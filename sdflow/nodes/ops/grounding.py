"""GLIGEN in the UNet: a gated self-attention layer ("fuser") after each transformer block's
self-attention, a position net at the UNet's root, and the boxes fed in the DenoiseLoop's batched CFG
call as diffusers' ``cross_attention_kwargs={"gligen": {boxes, positive_embeddings, masks}}``.

Each side of the CFG batch reads its own conditioning's boxes. A side without boxes (the negative,
usually) is drawn without the fusers, as ComfyUI runs a conditioning without GLIGEN ("plain"), or
through them with no objects (every slot null), as diffusers' StableDiffusionGLIGENPipeline draws
its negative ("empty"). A box acts on the first ``beta`` fraction of the steps (diffusers' scheduled
sampling: ``int(beta * steps)`` steps); on a step where no box acts the fusers are left out entirely,
as diffusers' ``enable_fuser(False)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from diffusers.models.attention import BasicTransformerBlock, GatedSelfAttentionDense
from diffusers.models.embeddings import GLIGENTextBoundingboxProjection

from sdflow.models.gligen import FUSER, MAX_OBJECTS, GligenWeights
from sdflow.models.ldm_keys import unet_mapping
from sdflow.models.patch import owned, shallow
from sdflow.nodes.types import Conditioning
from sdflow.nodes.types_grounding import Gligen, GroundingBox


class GroundingMismatch(ValueError):
    """A GLIGEN made for a UNet of another shape, or boxes the loop cannot draw."""


class RowFuser(GatedSelfAttentionDense):
    """diffusers' gated self-attention, applied to the rows ``rows`` marks only (None: every row);
    the other rows pass unchanged, as if the layer were not there."""

    rows: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, objs: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return super().forward(x, objs)
        out = x.clone()
        out[self.rows] = super().forward(x[self.rows], objs[self.rows])
        return out


def transformer_blocks(unet: torch.nn.Module) -> list[tuple[str, BasicTransformerBlock]]:
    """(path, block) of each transformer block the UNet's cross-attention models hold, in order."""
    return [(n, m) for n, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)]


def _file_name(unet: torch.nn.Module, path: str, layout: str) -> str:
    """A block's name in a GLIGEN file of ``layout`` (LDM names come from the UNet's config)."""
    if layout == "diffusers":
        return path
    source = unet_mapping(dict(unet.config), prefix="")(f"{path}{FUSER}linear.weight")
    assert source is not None
    return source.key[: -len(f"{FUSER}linear.weight")]


def installed(unet: torch.nn.Module, gligen: Gligen) -> tuple[torch.nn.Module, list[RowFuser]]:
    """A copy of ``unet`` with the GLIGEN's fuser in every transformer block and its position net,
    and those fusers; ``unet`` is left unchanged (GroundingMismatch when the GLIGEN does not fit)."""
    weights: GligenWeights = gligen.weights
    width = getattr(unet.config, "cross_attention_dim", None)
    blocks = transformer_blocks(unet)
    if not blocks or width != weights.object_width:
        raise GroundingMismatch(
            f"this GLIGEN makes objects {weights.object_width} wide for a UNet of cross-attention width "
            f"{weights.object_width}, but the model's is {width}: load the GLIGEN made for this family"
        )
    names = {_file_name(unet, path, weights.layout): path for path, _ in blocks}
    unknown = sorted(set(weights.fusers) - set(names))
    missing = sorted(set(names) - set(weights.fusers))
    if unknown or missing:
        detail = f"no layer for {missing[0]}" if missing else f"a layer for {unknown[0]}, which it lacks"
        raise GroundingMismatch(
            f"this GLIGEN has {len(weights.fusers)} gated layers but the model has {len(blocks)} "
            f"transformer blocks ({detail}): it was made for a UNet of another shape"
        )
    root = shallow(unet)
    fresh = {id(root)}
    fusers = []
    for name, path in names.items():
        block = unet.get_submodule(path)
        fuser = _fuser(weights.fusers[name], block, name)
        owned(root, fresh, path)._modules["fuser"] = fuser
        fusers.append(fuser)
    root._modules["position_net"] = _position_net(weights)
    return root, fusers


def _fuser(state: dict[str, torch.Tensor], block: BasicTransformerBlock, name: str) -> RowFuser:
    """A fuser on the file's tensors (no copy) with the block's heads."""
    dim = block.attn1.query_dim
    heads = block.attn1.heads
    query, context = state["linear.weight"].shape
    inner = state.get("attn.to_q.weight", state["linear.weight"]).shape[0]
    if query != dim or inner % heads:
        raise GroundingMismatch(
            f"this GLIGEN's layer for {name} is {query} wide but the model's block is {dim}: it was made "
            "for a UNet of another shape"
        )
    with torch.device("meta"):
        fuser = RowFuser(dim, context, heads, inner // heads)
    _load(fuser, state, name)
    return fuser


def _position_net(weights: GligenWeights) -> GLIGENTextBoundingboxProjection:
    with torch.device("meta"):
        net = GLIGENTextBoundingboxProjection(weights.phrase_width, weights.object_width)
    _load(net, weights.position_net, "the position net")
    return net


def _load(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    try:
        missing, unexpected = module.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # a tensor of another shape
        first = str(exc).strip().splitlines()[-1].strip()
        raise GroundingMismatch(f"this GLIGEN's {name} does not fit: {first}") from None
    if missing or unexpected:
        raise GroundingMismatch(
            f"this GLIGEN's {name} does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


@dataclass
class Feed:
    """A loop's GLIGEN inputs in its batch order, and the fusers of its UNet copy."""

    fusers: list[RowFuser]
    boxes: list[GroundingBox]  # every box of every side, each side's in order
    owner: torch.Tensor  # (rows, objects) the index of each row's object in ``boxes``, -1: none
    grounded: torch.Tensor  # (rows,) bool: the row goes through the fusers
    coordinates: torch.Tensor  # (rows, objects, 4) x1, y1, x2, y2 in 0..1
    phrases: torch.Tensor  # (rows, objects, width)

    def kwargs(self, rows: slice, index: int, total: int) -> dict[str, Any] | None:
        """The UNet's cross_attention_kwargs for step ``index`` of ``total`` on the batch rows
        ``rows`` (None: no box acts on this step), the fusers set to those rows."""
        acting = [index < int(box.beta * total) for box in self.boxes]
        if not any(acting):
            return None
        on = torch.tensor([*acting, False], device=self.owner.device)  # index -1: the padding
        masks = on[self.owner[rows]].to(self.phrases.dtype)
        grounded = self.grounded[rows]
        for fuser in self.fusers:
            fuser.rows = None if bool(grounded.all()) else grounded
        gligen = {"boxes": self.coordinates[rows], "positive_embeddings": self.phrases[rows], "masks": masks}
        return {"gligen": gligen}


def feed(
    unet: torch.nn.Module,
    sides: list[Conditioning],
    batch: int,
    size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    regional: bool = False,
) -> tuple[torch.nn.Module, Feed | None]:
    """The UNet the loop calls (with the GLIGEN installed when a side has boxes) and its feed, for
    ``sides`` in batch order each ``batch`` rows, on a latent of ``size`` (height, width);
    ``regional``: the loop predicts piece by piece (not supported with boxes yet)."""
    boxes = [box for side in sides for box in side.boxes]
    if not boxes:
        return unet, None
    if regional:
        raise GroundingMismatch(
            "GLIGEN boxes with combined, area or timestep-range conditioning are not supported yet"
        )
    gligens = {id(box.gligen.weights): box.gligen for box in boxes}
    if len(gligens) > 1:
        raise GroundingMismatch("these boxes come from two GLIGEN models: one loop draws with one GLIGEN")
    unboxed = {box.unboxed for box in boxes}
    if len(unboxed) > 1:
        raise GroundingMismatch("these boxes disagree on 'unboxed' (plain and empty): give them one value")
    for side in sides:
        if len(side.boxes) > MAX_OBJECTS:
            raise GroundingMismatch(
                f"a conditioning has {len(side.boxes)} boxes: a GLIGEN reads at most {MAX_OBJECTS}"
            )
    gligen = next(iter(gligens.values()))
    grounded_unet, fusers = installed(unet, gligen)
    for fuser in fusers:
        fuser.to(device, dtype)
    grounded_unet._modules["position_net"].to(device, dtype)
    height, width = size
    owner = torch.full((len(sides) * batch, MAX_OBJECTS), -1, dtype=torch.long)
    coordinates = torch.zeros(len(sides) * batch, MAX_OBJECTS, 4)
    phrases = torch.zeros(len(sides) * batch, MAX_OBJECTS, gligen.weights.phrase_width)
    grounded = torch.zeros(len(sides) * batch, dtype=torch.bool)
    first = 0
    for number, side in enumerate(sides):
        rows = slice(number * batch, (number + 1) * batch)
        grounded[rows] = bool(side.boxes) or "empty" in unboxed
        for slot, box in enumerate(side.boxes):
            x, y, w, h = box.box
            owner[rows, slot] = first + slot
            coordinates[rows, slot] = torch.tensor([x / width, y / height, (x + w) / width, (y + h) / height])
            phrases[rows, slot] = box.phrase.float().cpu()
        first += len(side.boxes)
    return grounded_unet, Feed(
        fusers,
        boxes,
        owner.to(device),
        grounded.to(device),
        coordinates.to(device, dtype),
        phrases.to(device, dtype),
    )
