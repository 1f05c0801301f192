"""The controls a conditioning carries, applied in DenoiseLoop's CFG batch as diffusers' pipelines do.

A ControlNet reads the same scaled latent input, timestep, text embeddings (and SDXL added conditioning)
as the UNet, with its picture resized by diffusers' control image processor; its residuals, scaled by
the strength, are summed over the chained controls (MultiControlNetModel) and added to the UNet's skip
connections. A T2I-Adapter's features are computed once and added inside the UNet's down blocks
(``down_intrablock_additional_residuals``). Each control acts only on the batch rows (negative and/or
positive half) whose conditioning carries it, and only in its start..end window of the steps; a step
that runs the positive alone (past DenoiseLoop's ``cfg_end``) runs the positive's controls alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.schedule_window import step_in_window
from sdflow.nodes.types import Conditioning, ControlEntry

LATENT_TO_PIXELS = 8


@dataclass
class PlannedControl:
    """One control entry prepared for a loop: the batch rows it acts on and its picture (or features)."""

    entry: ControlEntry
    rows: slice
    image: torch.Tensor | None = None  # ControlNet: the prepared picture, one per row
    features: list[torch.Tensor] | None = None  # T2I-Adapter: scaled features, one per row

    def active(self, index: int, total: int) -> bool:
        """diffusers' controlnet_keep: on while step ``index`` lies inside [start, end] of ``total``."""
        return step_in_window(index, total, self.entry.start_percent, self.entry.end_percent)


def control_image(pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The picture as diffusers' ControlNet pipelines prepare a tensor (VaeImageProcessor, no normalise)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=LATENT_TO_PIXELS, do_convert_rgb=True, do_normalize=False)
    return processor.preprocess(pixels.float().cpu(), height=height, width=width).to(dtype=torch.float32)


def plan(halves: list[Conditioning], batch: int, latent_size: tuple[int, int]) -> list[PlannedControl]:
    """The controls of the CFG halves (``halves`` in batch order, each ``batch`` rows), in the order the
    positive side applied them; an entry both halves carry acts on the whole batch in one call."""
    ordered: list[ControlEntry] = []
    for half in reversed(halves):  # the positive side's order first
        for entry in half.controls:
            if not any(entry is seen for seen in ordered):
                ordered.append(entry)
    height, width = latent_size[0] * LATENT_TO_PIXELS, latent_size[1] * LATENT_TO_PIXELS
    planned = []
    for entry in ordered:
        carrying = [i for i, half in enumerate(halves) if any(e is entry for e in half.controls)]
        rows = slice(carrying[0] * batch, (carrying[-1] + 1) * batch)
        planned.append(_prepared(entry, rows, batch, len(carrying), height, width))
    return planned


def positive_alone(planned: list[PlannedControl], batch: int, copies: int) -> list[PlannedControl]:
    """The controls of a step that runs the positive half alone (DenoiseLoop past ``cfg_end``): those
    the positive carries, on its ``batch`` rows alone, as ``plan`` makes them for the positive alone."""
    if copies == 1:
        return planned
    alone = []
    for control in planned:
        if control.rows.stop != batch * copies:  # carried by negative halves only
            continue
        image = None if control.image is None else control.image[-batch:]
        features = None if control.features is None else [f[-batch:] for f in control.features]
        alone.append(PlannedControl(control.entry, slice(0, batch), image=image, features=features))
    return alone


def _prepared(
    entry: ControlEntry, rows: slice, batch: int, copies: int, height: int, width: int
) -> PlannedControl:
    module = entry.control_net.module
    device, dtype = placement(module)
    pixels = entry.image
    repeat = batch if pixels.shape[0] == 1 else batch // pixels.shape[0]
    if entry.control_net.kind == "controlnet":
        image = control_image(pixels, height, width).repeat_interleave(repeat, dim=0).to(device, dtype)
        return PlannedControl(entry, rows, image=torch.cat([image] * copies))
    if tuple(pixels.shape[-2:]) != (height, width):
        pixels = torch.nn.functional.interpolate(pixels.float(), size=(height, width))
    with torch.inference_mode():
        features = module(pixels.to(device, dtype))
    scaled = [f * entry.strength for f in features]
    if repeat > 1:
        scaled = [f.repeat(repeat, 1, 1, 1) for f in scaled]
    return PlannedControl(entry, rows, features=[torch.cat([f] * copies) for f in scaled])


def unet_kwargs(
    planned: list[PlannedControl],
    model_input: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
    index: int,
    total: int,
) -> dict[str, Any]:
    """The UNet's extra keyword arguments for step ``index`` of ``total``: the summed residuals of the
    active controls (an empty dict when none is active)."""
    down: list[torch.Tensor] | None = None
    mid: torch.Tensor | None = None
    intrablock: list[torch.Tensor] | None = None
    whole = model_input.shape[0]
    for control in planned:
        if not control.active(index, total):
            continue
        if control.features is not None:
            features = [_rows(f, control.rows, whole).to(model_input) for f in control.features]
            intrablock = (
                features if intrablock is None else [a + b for a, b in zip(intrablock, features, strict=True)]
            )
            continue
        found_down, found_mid = _controlnet(control, model_input, t, embeds, added)
        found_down = [_rows(r, control.rows, whole).to(model_input) for r in found_down]
        found_mid = _rows(found_mid, control.rows, whole).to(model_input)
        if down is None:
            down, mid = found_down, found_mid
        else:
            down = [a + b for a, b in zip(down, found_down, strict=True)]
            mid = mid + found_mid
    kwargs: dict[str, Any] = {}
    if down is not None:
        kwargs["down_block_additional_residuals"] = down
        kwargs["mid_block_additional_residual"] = mid
    if intrablock is not None:
        kwargs["down_intrablock_additional_residuals"] = [f.clone() for f in intrablock]
    return kwargs


def _controlnet(
    control: PlannedControl,
    model_input: torch.Tensor,
    t: torch.Tensor,
    embeds: torch.Tensor,
    added: dict[str, torch.Tensor] | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    module = control.entry.control_net.module
    device, dtype = placement(module)
    rows = control.rows
    extra = {k: v[rows].to(device, dtype) for k, v in added.items()} if added is not None else None
    down, mid = module(
        model_input[rows].to(device, dtype),
        t,
        encoder_hidden_states=embeds[rows].to(device, dtype),
        controlnet_cond=control.image,
        conditioning_scale=control.entry.strength,
        added_cond_kwargs=extra,
        return_dict=False,
    )
    return list(down), mid


def _rows(tensor: torch.Tensor, rows: slice, whole: int) -> torch.Tensor:
    """``tensor`` (the rows ``rows`` of a batch of ``whole``) placed in a zero batch of ``whole`` rows."""
    if tensor.shape[0] == whole:
        return tensor
    full = torch.zeros((whole, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    full[rows] = tensor
    return full
