"""sdflow's comfy sampling mode: k-diffusion style samplers over a sigma table, computed as ComfyUI
computes them, so that an imported ComfyUI workflow draws ComfyUI's picture from the same seed.

A sampler here is ``run(denoise, x, sigmas, noise, progress)``: ``denoise(x, sigma)`` is the guided
model's estimate of the clean latent at noise level ``sigma`` (a 0-d float32 tensor), ``x`` starts as
the noised latent (float32), ``sigmas`` is the table to walk (descending, float32, on x's device),
``noise`` makes the sampler's own noise (``Noises``) and ``progress(i, x, denoised)`` is told after
each step. The math follows Karras et al. (arXiv 2206.00364), DPM-Solver++ (arXiv 2211.01095), UniPC
(arXiv 2302.04867) and LCM, with the arithmetic ordered as ComfyUI orders it (float32 tensors for the
sigmas), since its pictures are the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from sdflow.nodes.ops.comfy_unipc import uni_pc, uni_pc_bh2

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, torch.Tensor, torch.Tensor], None]

LMS_ORDER = 4


class Noises:
    """A sampler's own noise, seeded with the sampler's seed: ``step(sigma, sigma_next)`` for the
    ancestral samplers (a generator on x's device; on the CPU seeded seed + 1, as ComfyUI's default
    noise sampler), ``brownian(sigmas)`` for the SDE samplers (a torchsde Brownian tree on the CPU,
    seeded with the seed)."""

    def __init__(self, x: torch.Tensor, seed: int) -> None:
        self.x, self.seed = x, seed
        self._generator: torch.Generator | None = None

    def step(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        if self._generator is None:
            self._generator = torch.Generator(device=self.x.device)
            self._generator.manual_seed(self.seed + 1 if self.x.device.type == "cpu" else self.seed)
        x = self.x
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=self._generator)

    def brownian(self, sigmas: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Brownian increments between two sigmas of ``sigmas``' range, normalised to unit variance."""
        import torchsde

        low, high = sigmas[sigmas > 0].min(), sigmas.max()
        start = torch.zeros_like(self.x).detach().cpu()
        tree = torchsde.BrownianTree(low.detach().cpu(), start, high.detach().cpu(), entropy=self.seed)

        def increment(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
            a, b = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
            lo, hi, sign = (a, b, 1) if a < b else (b, a, -1)
            with warnings.catch_warnings():  # torchsde warns of the float32 ends' last-digit rounding
                warnings.simplefilter("ignore", UserWarning)
                w = tree(lo.detach().cpu().float(), hi.detach().cpu().float())
            w = w.to(device=lo.device, dtype=lo.dtype) * sign
            return w / (b - a).abs().sqrt()

        return increment


def _ancestral(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0) -> tuple[Any, Any]:
    """(sigma_down, sigma_up): the deterministic step's target and the fresh noise's level."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    return (sigma_next**2 - up**2) ** 0.5, up


def _slope(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    return (x - denoised) / sigma


def euler(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = x + _slope(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        progress(i, x, denoised)
    return x


def euler_ancestral(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        down, up = _ancestral(sigmas[i], sigmas[i + 1])
        if down == 0:
            x = denoised
        else:
            x = x + _slope(x, sigmas[i], denoised) * (down - sigmas[i])
            x = x + noise.step(sigmas[i], sigmas[i + 1]) * up
        progress(i, x, denoised)
    return x


def heun(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        sigma, following = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        slope, dt = _slope(x, sigma, denoised), following - sigma
        if following == 0:
            x = x + slope * dt
        else:
            guess = x + slope * dt
            slope_there = _slope(guess, following, denoise(guess, following))
            x = x + (slope + slope_there) / 2 * dt
        progress(i, x, denoised)
    return x


def _midpoint(sigma: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The geometric mean of two sigmas (halfway in log sigma)."""
    return sigma.log().lerp(target.log(), 0.5).exp()


def dpm_2(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """DPM-Solver-2 steps on Karras's ODE: the slope at the log-midpoint carries the whole step."""
    for i in range(len(sigmas) - 1):
        sigma, following = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        slope = _slope(x, sigma, denoised)
        if following == 0:
            x = x + slope * (following - sigma)
        else:
            middle = _midpoint(sigma, following)
            halfway = x + slope * (middle - sigma)
            x = x + _slope(halfway, middle, denoise(halfway, middle)) * (following - sigma)
        progress(i, x, denoised)
    return x


def dpm_2_ancestral(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """dpm_2 down to the ancestral step's lower sigma, then fresh noise up to the next sigma."""
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i]
        denoised = denoise(x, sigma)
        down, up = _ancestral(sigma, sigmas[i + 1])
        slope = _slope(x, sigma, denoised)
        if down == 0:
            x = x + slope * (down - sigma)
        else:
            middle = _midpoint(sigma, down)
            halfway = x + slope * (middle - sigma)
            x = x + _slope(halfway, middle, denoise(halfway, middle)) * (down - sigma)
            x = x + noise.step(sigma, sigmas[i + 1]) * up
        progress(i, x, denoised)
    return x


def _lms_weight(order: int, table: Any, i: int, j: int) -> float:
    """The integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of the j-th last point."""
    from scipy import integrate

    def basis(tau: float) -> float:
        product = 1.0
        for k in range(order):
            if k != j:
                product *= (tau - table[i - k]) / (table[i - j] - table[i - k])
        return product

    return integrate.quad(basis, table[i], table[i + 1], epsrel=1e-4)[0]


def lms(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """Linear multistep (up to 4 slopes) in sigma; the last step to 0 jumps to the estimate."""
    table = sigmas.detach().cpu().numpy()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        slopes = [*slopes, _slope(x, sigmas[i], denoised)][-LMS_ORDER:]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            order = min(i + 1, LMS_ORDER)
            weights = [_lms_weight(order, table, i, j) for j in range(order)]
            x = x + sum(w * d for w, d in zip(weights, reversed(slopes), strict=False))
        progress(i, x, denoised)
    return x


def ddpm(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """Ancestral DDPM posterior steps, taken in the variance-preserving space."""
    for i in range(len(sigmas) - 1):
        sigma, previous = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        eps = (x - denoised) / sigma
        scaled = x / torch.sqrt(1.0 + sigma**2.0)
        kept = 1 / ((sigma * sigma) + 1)
        kept_previous = 1 / ((previous * previous) + 1)
        alpha = kept / kept_previous
        x = (1.0 / alpha).sqrt() * (scaled - (1 - alpha) * eps / (1 - kept).sqrt())
        if previous > 0:
            spread = ((1 - alpha) * (1.0 - kept_previous) / (1.0 - kept)).sqrt()
            x = x + spread * noise.step(sigma, previous)
        if previous != 0:
            x = x * torch.sqrt(1.0 + previous**2.0)
        progress(i, x, denoised)
    return x


def _log_snr(sigma: torch.Tensor) -> torch.Tensor:
    """Half the log signal-to-noise ratio of an eps / v model's sigma: -log(sigma)."""
    return sigma.log().neg()


def dpmpp_2m(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        t, t_next = _log_snr(sigmas[i]), _log_snr(sigmas[i + 1])
        h = t_next - t
        ratio = t_next.neg().exp() / t.neg().exp()
        if previous is None or sigmas[i + 1] == 0:
            x = ratio * x - (-h).expm1() * denoised
        else:
            r = (t - _log_snr(sigmas[i - 1])) / h
            blended = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
            x = ratio * x - (-h).expm1() * blended
        previous = denoised
        progress(i, x, denoised)
    return x


def dpmpp_sde(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """DPM-Solver++ (stochastic), with its midpoint at r = 1/2 and eta 1."""
    if len(sigmas) <= 1:
        return x
    increment = noise.brownian(sigmas)
    r, eta = 0.5, 1.0
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _log_snr(sigmas[i]), _log_snr(sigmas[i + 1])
            h = lam_t - lam_s
            lam_mid = lam_s + r * h
            sigma_mid = lam_mid.neg().exp()
            alpha_s = sigmas[i] * lam_s.exp()
            alpha_mid = sigma_mid * lam_mid.exp()
            alpha_t = sigmas[i + 1] * lam_t.exp()
            down, up = _ancestral(lam_s.neg().exp(), lam_mid.neg().exp(), eta)
            h_down = down.log().neg() - lam_s
            x_mid = (alpha_mid / alpha_s) * (-h_down).exp() * x - alpha_mid * (-h_down).expm1() * denoised
            x_mid = x_mid + alpha_mid * increment(sigmas[i], sigma_mid) * up
            denoised_mid = denoise(x_mid, sigma_mid)
            down, up = _ancestral(lam_s.neg().exp(), lam_t.neg().exp(), eta)
            h_down = down.log().neg() - lam_s
            fac = 1 / (2 * r)
            blended = (1 - fac) * denoised + fac * denoised_mid
            x = (alpha_t / alpha_s) * (-h_down).exp() * x - alpha_t * (-h_down).expm1() * blended
            x = x + alpha_t * increment(sigmas[i], sigmas[i + 1]) * up
        progress(i, x, denoised)
    return x


def _multistep_sde(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress, order: int
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (midpoint) and (3M) SDE, eta 1."""
    if len(sigmas) <= 1:
        return x
    increment = noise.brownian(sigmas)
    eta = 1.0
    history: list[torch.Tensor] = []  # the last denoised estimates, newest first
    steps: list[Any] = []  # the log-SNR step sizes that led to them, newest first
    h: Any = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = _log_snr(sigmas[i]), _log_snr(sigmas[i + 1])
            h = lam_t - lam_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lam_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if order == 2 and history:
                r = steps[0] / h
                x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - history[0])
            elif order == 3 and len(history) >= 2 and steps[1] is not None:
                r0, r1 = steps[0] / h, steps[1] / h
                d1_0 = (denoised - history[0]) / r0
                d1_1 = (history[0] - history[1]) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif order == 3 and history:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * ((denoised - history[0]) / (steps[0] / h))
            x = x + increment(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt()
        history = [denoised, *history][:2]
        steps = [h, *steps][:2]
        progress(i, x, denoised)
    return x


def dpmpp_2m_sde(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    return _multistep_sde(denoise, x, sigmas, noise, progress, order=2)


def dpmpp_3m_sde(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    return _multistep_sde(denoise, x, sigmas, noise, progress, order=3)


def lcm(
    denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, noise: Noises, progress: Progress
) -> torch.Tensor:
    """Latent consistency: jump to the estimate, re-noise it to the next sigma."""
    for i in range(max(1, len(sigmas) - 1)):
        denoised = denoise(x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            x = noise.step(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] + x
        progress(i, x, denoised)
    return x


RUNS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_sde": dpmpp_sde,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_3m_sde": dpmpp_3m_sde,
    "lcm": lcm,
    "ddim": euler,  # ComfyUI's ddim is Euler (with other inpainting noise: see inpaint_noise)
    "unipc": uni_pc,
    "uni_pc_bh2": uni_pc_bh2,
    "dpm_2": dpm_2,
    "dpm_2_ancestral": dpm_2_ancestral,
    "lms": lms,
    "ddpm": ddpm,
}


def inpaint_noise(sampler: str, noise: torch.Tensor, seed: int) -> torch.Tensor:
    """The noise a masked-out region is re-noised with at each step: the starting noise, except for
    ddim, whose is drawn afresh on the CPU from seed + 1."""
    if sampler != "ddim":
        return noise
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)
    fresh = torch.randn(noise.shape, generator=generator, device="cpu")
    return fresh.to(noise.dtype).to(noise.device)
