"""DeepCache: reuse the UNet's deep features across denoising steps (Ma et al., 2023), as a model patch.

Every ``interval``-th UNet call runs the whole UNet and keeps what its deep blocks returned; the calls
between run only the outer ``branch + 1`` down and up blocks, reading the deep part's kept outputs
(features change slowly from step to step at the coarse resolutions). A call with a larger timestep
than the last, or another batch shape, starts a new loop and runs fully.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.models.patch import hookable_copy, owned
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.ops.flow_models import unet_only
from sdflow.nodes.types import Model


class _Steps:
    """Counts the UNet calls of one loop and says whether this one runs fully."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.call = 0
        self.last: tuple[float, tuple[int, ...]] | None = None
        self.kept: dict[str, Any] = {}

    @property
    def full(self) -> bool:
        return self.call % self.interval == 0

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        t = float(timestep.flatten()[0]) if isinstance(timestep, torch.Tensor) else float(timestep)
        shape = tuple(sample.shape)
        if self.last is None or t > self.last[0] or shape != self.last[1]:
            self.call, self.kept = 0, {}
        else:
            self.call += 1
        self.last = (t, shape)


def _fresh(value: Any) -> Any:
    """A kept output handed out again: tensors the UNet may add to in place are copies."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
        return (value[0].clone(), *value[1:])
    return value


def _kept_forward(block: torch.nn.Module, name: str, steps: _Steps) -> Any:
    original = type(block).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if steps.full or name not in steps.kept:
            steps.kept[name] = original(block, *args, **kwargs)
            return steps.kept[name]
        return _fresh(steps.kept[name])

    return forward


def deep_blocks(unet: torch.nn.Module, branch: int) -> list[str]:
    """Names of the blocks a cached call skips: all but the outer ``branch + 1`` down and up blocks."""
    downs, ups = len(unet.down_blocks), len(unet.up_blocks)
    names = [f"down_blocks.{i}" for i in range(branch + 1, downs)]
    names += ["mid_block"] if unet.mid_block is not None else []
    return names + [f"up_blocks.{i}" for i in range(ups - branch - 1)]


def deep_cache_unet(unet: torch.nn.Module, interval: int, branch: int) -> torch.nn.Module:
    """A copy-on-write copy of ``unet`` that computes its deep blocks every ``interval`` calls."""
    root = hookable_copy(unet)
    steps = _Steps(interval)
    root.register_forward_pre_hook(steps, with_kwargs=True)
    fresh = {id(root)}
    for name in deep_blocks(unet, branch):
        block = owned(root, fresh, name)
        block.forward = _kept_forward(block, name, steps)
    return root


class DeepCache(Node):
    """Reuse the UNet's deep features between full steps (DeepCache): faster, the picture slightly
    changed; interval 1 draws exactly the unpatched picture."""

    version: ClassVar[int] = 1
    outputs: ClassVar[dict[str, type]] = {"model": Model}
    cache: ClassVar[str] = "model"
    family_from: ClassVar[dict[str, str]] = {"model": "model"}

    model: Model = Field(description="the model to patch; left unchanged")
    interval: int = Field(3, ge=1, le=10, description="run the whole UNet every this many calls (1 = always)")
    branch: int = Field(
        0,
        ge=0,
        le=2,
        description="outer down/up block pairs recomputed on the calls between (0 = the outermost only)",
    )

    def run(self, ctx: RunContext) -> dict[str, Any]:
        unet_only(self, self.model, ctx)
        unet = self.model.unet
        if not hasattr(unet, "down_blocks") or self.branch + 1 >= len(unet.down_blocks):
            raise ctx.error(f"branch {self.branch} leaves no deep block to cache in this UNet", "branch")
        if self.interval == 1:
            return {"model": self.model}
        return {"model": replace(self.model, unet=deep_cache_unet(unet, self.interval, self.branch))}
