"""diffusers' own pipelines as the references the parity tests compare against."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sdflow.models.weights import is_aligned
from sdflow.nodes.ops.samplers import SAMPLERS


def aligned(pipe: Any) -> Any:
    """``pipe`` with every weight of its models in freshly allocated (64-byte aligned) memory, as
    sdflow's loaders keep theirs (sdflow.models.weights.is_aligned).

    ``from_pretrained`` leaves the weights as views of the mapped file, at the file's offsets: MKL's
    kernels split their loops by operand alignment, so the same values there give other low bits
    (SDXL's pooled embedding, through text_projection, moves by ~3e-7, which a LoRA'd tiny UNet
    amplifies past the parity tolerance). Same values, same computation, only the addresses change."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in (*component.parameters(), *component.buffers()):
                if not is_aligned(tensor):
                    tensor.data = tensor.data.clone()
    return pipe


def pipeline_images(pipe: Any, config: dict[str, Any], sampler: str, seed: int, **kwargs: Any) -> np.ndarray:
    """``pipe``'s numpy output (batch, height, width, 3) with the scheduler ``sampler`` names made from
    ``config`` (the checkpoint's own), its generator seeded with ``seed``."""
    cls, overrides = SAMPLERS[sampler]
    aligned(pipe)  # the weights where sdflow keeps its own (see aligned)
    pipe.scheduler = cls.from_config(config, **overrides)
    kwargs.setdefault("output_type", "np")
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images
