"""diffusers' own pipelines as the references the parity tests compare against."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sdflow.nodes.ops.samplers import SAMPLERS


def pipeline_images(pipe: Any, config: dict[str, Any], sampler: str, seed: int, **kwargs: Any) -> np.ndarray:
    """``pipe``'s numpy output (batch, height, width, 3) with the scheduler ``sampler`` names made from
    ``config`` (the checkpoint's own), its generator seeded with ``seed``."""
    cls, overrides = SAMPLERS[sampler]
    pipe.scheduler = cls.from_config(config, **overrides)
    kwargs.setdefault("output_type", "np")
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images
