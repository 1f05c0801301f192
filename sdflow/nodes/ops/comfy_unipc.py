"""Comfy mode's UniPC samplers (``uni_pc``: bh1, ``uni_pc_bh2``), computed as ComfyUI computes them
over a sigma table (UniPC, Zhao et al., arXiv 2302.04867; the variance-preserving view of each sigma).
The call is comfy_sampling's ``run(denoise, x, sigmas, noise, progress)``; UniPC draws no noise."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, torch.Tensor, torch.Tensor], None]
UNIPC_LAST_SIGMA = 0.001  # UniPC ends at this sigma instead of 0


class _Marginals:
    """The variance-preserving view of a sigma: alpha = 1 / sqrt(1 + sigma^2), its std and log-SNR."""

    @staticmethod
    def log_alpha(sigma: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.log(1 / ((sigma * sigma) + 1))

    def alpha(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(sigma))

    def std(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(sigma)))

    def lam(self, sigma: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha(sigma)
        return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _unipc(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Any, progress: Progress, bh2: bool
) -> torch.Tensor:
    """UniPC (multistep predictor-corrector, B(h) = h or e^h - 1), data prediction, in the
    variance-preserving space, up to third order, lower orders at the start and the end."""
    vp = _Marginals()
    table = sigmas.clone()
    if table[-1] == 0:
        table[-1] = UNIPC_LAST_SIGMA
    steps = len(table) - 1
    order = min(3, len(table) - 2)

    def data(xv: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The clean estimate for the variance-preserving latent ``xv`` at ``sigma``."""
        xk = xv * ((sigma**2 + 1.0) ** 0.5)
        eps = (xk - denoise(xk, sigma)) / sigma
        return (xv - vp.std(sigma) * eps) / vp.alpha(sigma)

    def update(
        xv: torch.Tensor, models: list, times: list, t: torch.Tensor, k: int, correct: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        lam_prev, lam_t = vp.lam(times[-1]), vp.lam(t)
        newest = models[-1]
        alpha_t = torch.exp(vp.log_alpha(t))
        h = lam_t - lam_prev
        ratios, diffs = [], []
        for back in range(1, k):
            ratio = (vp.lam(times[-(back + 1)]) - lam_prev) / h
            ratios.append(ratio)
            diffs.append((models[-(back + 1)] - newest) / ratio)
        ratios.append(1.0)
        rks = torch.tensor([float(r) for r in ratios], device=xv.device)
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = torch.expm1(hh) if bh2 else hh
        powers, targets, factorial = [], [], 1
        for i in range(1, k + 1):
            powers.append(torch.pow(rks, i - 1))
            targets.append(float(h_phi_k * factorial / b_h))
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        matrix = torch.stack(powers)
        b = torch.tensor(targets, device=xv.device)
        stacked = torch.stack(diffs, dim=1) if diffs else None
        base = (vp.std(t) / vp.std(times[-1])) * xv - (alpha_t * h_phi_1) * newest
        predicted = base
        if stacked is not None:
            rhos_p = (
                torch.tensor([0.5], device=xv.device)
                if k == 2
                else torch.linalg.solve(matrix[:-1, :-1], b[:-1])
            )
            predicted = base - (alpha_t * b_h) * torch.einsum("k,bkchw->bchw", rhos_p, stacked)
        if not correct:
            return predicted, None
        rhos_c = torch.tensor([0.5], device=xv.device) if k == 1 else torch.linalg.solve(matrix, b)
        model_t = data(predicted, t)
        residual = torch.einsum("k,bkchw->bchw", rhos_c[:-1], stacked) if stacked is not None else 0
        corrected = base - (alpha_t * b_h) * (residual + rhos_c[-1] * (model_t - newest))
        return corrected, model_t

    xv = x / torch.sqrt(1.0 + table[0] ** 2.0)
    models, times = [data(xv, table[0])], [table[0]]
    progress(0, xv / vp.alpha(times[-1]), models[-1])
    for index in range(1, steps):
        if index < order:
            xv, model_x = update(xv, models, times, table[index], index, True)
            models.append(model_x if model_x is not None else data(xv, table[index]))
            times.append(table[index])
        else:
            for step in range(index, index + 1 + (1 if index == steps - 1 else 0)):
                xv, model_x = update(
                    xv, models, times, table[step], min(order, steps + 1 - step), step != steps
                )
                models, times = models[1:] + models[-1:], [*times[1:], table[step]]
                if step < steps:
                    models[-1] = model_x if model_x is not None else data(xv, table[step])
        progress(index, xv / vp.alpha(times[-1]), models[-1])
    return xv / vp.alpha(table[-1])


def uni_pc(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Any, progress: Progress
) -> torch.Tensor:
    return _unipc(denoise, x, sigmas, noise, progress, bh2=False)


def uni_pc_bh2(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Any, progress: Progress
) -> torch.Tensor:
    return _unipc(denoise, x, sigmas, noise, progress, bh2=True)
