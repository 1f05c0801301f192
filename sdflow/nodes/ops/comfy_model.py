"""Comfy mode's model: the UNet as a denoiser of sigma, wrapped as ComfyUI wraps a discrete-time
eps / v model (its ModelSamplingDiscrete and CFG).

``Wrapped(x, sigma)`` is the guided estimate of the clean latent: the latent scaled by
1 / sqrt(sigma^2 + 1) goes to the UNet in its dtype with the training timestep nearest ``sigma`` (in
log sigma); each guidance side's output (float32) becomes a clean estimate (eps: x - eps * sigma; v:
x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)); the sides combine as the guidance says (CFG on the
estimates, the sides in one UNet batch). With a noise mask, the kept region is the original re-noised
to ``sigma`` going in and the original coming out, at every call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from sdflow.nodes.ops.guidance import Guidance
from sdflow.nodes.ops.sigma_schedules import TrainingSigmas

Predict = Callable[[torch.Tensor, Any, int, bool], list[torch.Tensor]]


class Wrapped:
    """The denoiser comfy mode's samplers call; ``index`` is the step under way (set by the loop)."""

    def __init__(
        self,
        predict: Predict,
        guide: Guidance,
        scheduler_config: dict[str, Any],
        dtype: torch.dtype,
        guided_count: int,
        mask: torch.Tensor | None = None,
        clean: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> None:
        self.predict, self.guide, self.dtype, self.guided_count = predict, guide, dtype, guided_count
        self.v_prediction = scheduler_config.get("prediction_type", "epsilon") == "v_prediction"
        self.log_sigmas = TrainingSigmas(scheduler_config).log_sigmas
        self.mask, self.clean, self.noise = mask, clean, noise
        self.index = 0

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """The training timestep nearest ``sigma`` in log space, as a float on sigma's device."""
        log_sigmas = self.log_sigmas.to(sigma.device)
        return (sigma.log() - log_sigmas).abs().argmin().float()

    def clean_estimate(self, x: torch.Tensor, sigma: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        if self.v_prediction:
            return x * 1.0 / (sigma**2 + 1.0) - output * sigma * 1.0 / (sigma**2 + 1.0) ** 0.5
        return x - output * sigma

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if mask is not None:
            assert self.clean is not None and self.noise is not None
            x = x * mask + (self.clean + self.noise * sigma) * (1.0 - mask)
        scaled = x / (sigma**2 + 1.0) ** 0.5
        guiding = self.guide.guiding and self.index < self.guided_count
        outputs = self.predict(scaled.to(self.dtype), self.timestep(sigma), self.index, guiding)
        estimates = [self.clean_estimate(x, sigma, output.float()) for output in outputs]
        denoised = self.guide.combine(estimates) if guiding else estimates[-1]
        if mask is not None:
            denoised = denoised * mask + self.clean * (1.0 - mask)
        return denoised
