"""Sigma tables as ComfyUI's ``calculate_sigmas`` makes them, from a checkpoint's training schedule.

Each table runs from the highest noise level to a final 0 (usually steps + 1 values). The training
sigmas are ComfyUI's: betas in float64 from the scheduler config, sqrt((1 - alpha_bar) / alpha_bar),
then float32; a fractional timestep's sigma is interpolated in log space, a sigma's timestep is the
nearest training one (in log space), as ComfyUI's ModelSamplingDiscrete does.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

TURBO_TIMESTEPS = 10  # SDTurboScheduler's ladder: 999, 899, ..., 99
LINEAR_QUADRATIC_THRESHOLD = 0.025
BETA_ALPHA = BETA_BETA = 0.6
KARRAS_RHO = 7.0
TOLERANCE = 1e-5  # a sigma matching a training sigma, relatively
ZERO = 1e-5  # math.isclose(abs_tol) ComfyUI uses to spot a zero-SNR table


class TrainingSigmas:
    """A checkpoint's training noise levels (ascending, one per training timestep)."""

    def __init__(self, scheduler_config: dict[str, Any]) -> None:
        exact = training_sigmas(scheduler_config, torch.float64)
        self.sigmas = exact.float()
        self.log_sigmas = exact.log().float()  # as ComfyUI: the log taken before rounding to float32

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def timestep(self, sigma: float) -> int:
        """The training timestep whose sigma is nearest ``sigma`` in log space."""
        return int((math.log(sigma) - self.log_sigmas).abs().argmin())

    def sigma(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Sigmas at (fractional) timesteps, interpolated between neighbours in log space."""
        t = timesteps.float().clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()


def training_sigmas(config: dict[str, Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Training sigmas from a diffusers scheduler config (ValueError for a beta schedule we lack)."""
    count = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
    kind = config.get("beta_schedule", "scaled_linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif kind == "scaled_linear":  # ComfyUI's "linear": evenly spaced in sqrt(beta)
        betas = torch.linspace(start**0.5, end**0.5, count, dtype=torch.float64) ** 2
    elif kind == "linear":
        betas = torch.linspace(start, end, count, dtype=torch.float64)
    else:
        raise ValueError(f"beta_schedule '{kind}' has no ComfyUI sigma table here (scaled_linear, linear)")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).to(dtype)


def _with_zero(values: list[float] | torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.as_tensor(values, dtype=torch.float32), torch.zeros(1)])


def normal(table: TrainingSigmas, steps: int, sgm: bool = False) -> torch.Tensor:
    """``normal`` / ``sgm_uniform``: timesteps evenly spaced from the top to the bottom of the table."""
    start, end = table.timestep(table.sigma_max), table.timestep(table.sigma_min)
    if sgm:
        return _with_zero(table.sigma(torch.linspace(start, end, steps + 1)[:-1]))
    if math.isclose(float(table.sigma(torch.tensor(end))), 0, abs_tol=ZERO):
        return table.sigma(torch.linspace(start, end, steps + 1))
    return _with_zero(table.sigma(torch.linspace(start, end, steps)))


def simple(table: TrainingSigmas, steps: int) -> torch.Tensor:
    """``simple``: every (len / steps)-th training sigma from the top."""
    stride = len(table.sigmas) / steps
    return _with_zero([float(table.sigmas[-(1 + int(x * stride))]) for x in range(steps)])


def ddim_uniform(table: TrainingSigmas, steps: int) -> torch.Tensor:
    """``ddim_uniform``: training sigmas at a whole stride up from timestep 1, reversed."""
    values: list[float] = []
    if math.isclose(float(table.sigmas[1]), 0, abs_tol=ZERO):
        steps += 1
    else:
        values = [0.0]
    stride = max(len(table.sigmas) // steps, 1)
    values += [float(sigma) for sigma in table.sigmas[1::stride]]
    return torch.tensor(values[::-1], dtype=torch.float32)


def beta(table: TrainingSigmas, steps: int) -> torch.Tensor:
    """``beta``: timesteps at the Beta(0.6, 0.6) quantiles (arXiv 2407.12173), repeats dropped."""
    from scipy.stats import beta as beta_distribution

    last = len(table.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    timesteps = np.rint(beta_distribution.ppf(quantiles, BETA_ALPHA, BETA_BETA) * last)
    values, previous = [], -1.0
    for t in timesteps:
        if t != previous:
            values.append(float(table.sigmas[int(t)]))
        previous = t
    return _with_zero(values)


def linear_quadratic(table: TrainingSigmas, steps: int) -> torch.Tensor:
    """``linear_quadratic`` (Mochi's): linear to 0.025 for half the steps, quadratic after, x sigma_max."""
    if steps == 1:
        fractions = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        threshold = LINEAR_QUADRATIC_THRESHOLD
        linear = [i * threshold / linear_steps for i in range(linear_steps)]
        gap = linear_steps - threshold * steps
        quadratic_steps = steps - linear_steps
        a = gap / (linear_steps * quadratic_steps**2)
        b = threshold / linear_steps - 2 * gap / (quadratic_steps**2)
        c = a * linear_steps**2
        quadratic = [a * i**2 + b * i + c for i in range(linear_steps, steps)]
        fractions = [1.0 - x for x in linear + quadratic + [1.0]]
    return torch.tensor(fractions, dtype=torch.float32) * torch.tensor(table.sigma_max)


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = KARRAS_RHO) -> torch.Tensor:
    """Karras et al.'s spacing (k-diffusion's get_sigmas_karras)."""
    ramp = torch.linspace(0, 1, steps)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _with_zero((high + ramp * (low - high)) ** rho)


def exponential(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in log sigma (k-diffusion's get_sigmas_exponential)."""
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps).exp())


def kl_optimal(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Evenly spaced in arctan(sigma) (arXiv 2407.12173's KL-optimal steps)."""
    ramp = torch.arange(steps, dtype=torch.float).div_(steps - 1) if steps > 1 else torch.zeros(1)
    sigmas = torch.zeros(steps + 1)
    sigmas[:-1] = (ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan_()
    return sigmas


def turbo(table: TrainingSigmas, steps: int, denoise: float = 1.0) -> torch.Tensor:
    """SDTurboScheduler: ``steps`` of the timesteps 999, 899, ..., 99, starting lower as denoise drops."""
    first = TURBO_TIMESTEPS - int(TURBO_TIMESTEPS * denoise)
    ladder = torch.flip(torch.arange(1, TURBO_TIMESTEPS + 1) * 100 - 1, (0,))[first : first + steps]
    return _with_zero(table.sigma(ladder))


_FROM_TABLE: dict[str, Callable[[TrainingSigmas, int], torch.Tensor]] = {
    "normal": normal,
    "sgm_uniform": lambda table, steps: normal(table, steps, sgm=True),
    "simple": simple,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "linear_quadratic": linear_quadratic,
    "sd_turbo": turbo,
}
_FROM_RANGE: dict[str, Callable[[int, float, float], torch.Tensor]] = {
    "karras": karras,
    "exponential": exponential,
    "kl_optimal": kl_optimal,
}
# ComfyUI's scheduler names (KSampler's `scheduler`), plus sd_turbo (its SDTurboScheduler node).
COMFY_SCHEDULES = ("normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta")
SCHEDULES = (*COMFY_SCHEDULES, "linear_quadratic", "kl_optimal", "sd_turbo")


def calculate_sigmas(scheduler_config: dict[str, Any], name: str, steps: int) -> torch.Tensor:
    """The sigma table ComfyUI's calculate_sigmas gives for schedule ``name`` (ValueError if unknown)."""
    table = TrainingSigmas(scheduler_config)
    if name in _FROM_TABLE:
        return _FROM_TABLE[name](table, steps)
    if name in _FROM_RANGE:
        return _FROM_RANGE[name](steps, table.sigma_min, table.sigma_max)
    raise ValueError(f"unknown schedule '{name}': use one of {', '.join(SCHEDULES)}")


def denoised_sigmas(scheduler_config: dict[str, Any], name: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler's table: the last steps + 1 sigmas of a steps / denoise schedule (empty at 0)."""
    if denoise <= 0.0:
        return torch.zeros(0)
    if name == "sd_turbo":
        return turbo(TrainingSigmas(scheduler_config), steps, denoise)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    return calculate_sigmas(scheduler_config, name, total)[-(steps + 1) :]


def flow_denoised(scheduler_config: dict[str, Any], name: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler's table on a flow-matching model (ValueError for a schedule it has not)."""
    from sdflow.models.flow import sigma_table

    if denoise <= 0.0:
        return torch.zeros(0)
    total = steps if denoise >= 1.0 else int(steps / denoise)
    return sigma_table(scheduler_config, name, total)[-(steps + 1) :]


# Schedules whose sigmas are all training sigmas at whole timesteps: a scheduler that takes custom
# timesteps (but not sigmas) runs them exactly.
WHOLE_TIMESTEPS = ("simple", "ddim_uniform", "beta", "sd_turbo")


def feed(scheduler_class: type, name: str) -> str | None:
    """How ``scheduler_class`` takes schedule ``name``: "sigmas", "timesteps" or None (it cannot)."""
    takes = inspect.signature(scheduler_class.set_timesteps).parameters
    flow_only = "use_flow_sigmas" in inspect.signature(scheduler_class.__init__).parameters
    if "sigmas" in takes and not flow_only:
        return "sigmas"
    if "timesteps" in takes and name in WHOLE_TIMESTEPS:
        return "timesteps"
    return None


def whole_timesteps(scheduler_config: dict[str, Any], sigmas: torch.Tensor) -> list[int]:
    """The training timestep of each nonzero sigma of a WHOLE_TIMESTEPS table."""
    table = TrainingSigmas(scheduler_config)
    return [table.timestep(float(sigma)) for sigma in sigmas if float(sigma) > 0]


def refusal(sampler: str, scheduler_class: type, name: str) -> str | None:
    """Why ``sampler`` cannot run schedule ``name`` (None: it can)."""
    if feed(scheduler_class, name) is not None:
        return None
    whole = ", ".join(WHOLE_TIMESTEPS)
    if "timesteps" in inspect.signature(scheduler_class.set_timesteps).parameters:
        return f"sampler '{sampler}' takes only schedules of whole timesteps ({whole}); euler takes every one"
    return f"sampler '{sampler}' takes no custom schedule (diffusers' {scheduler_class.__name__}): use euler"


def explicit(
    scheduler_class: type, scheduler_config: dict[str, Any], sigmas: torch.Tensor, name: str
) -> dict:
    """Schedule fields that make ``scheduler_class`` run ``sigmas``: {"sigmas": ...} or {"timesteps": ...}."""
    if feed(scheduler_class, name) == "sigmas":
        return {"sigmas": tuple(float(sigma) for sigma in sigmas)}
    return {"timesteps": tuple(whole_timesteps(scheduler_config, sigmas))}


def table_fields(scheduler_class: type, scheduler_config: dict[str, Any], values: torch.Tensor) -> dict:
    """Schedule fields that run an arbitrary sigma table (ValueError when this scheduler cannot)."""
    if len(values) < 2:
        raise ValueError(f"these sigmas hold no step ({len(values)} value(s); denoise 0?)")
    if feed(scheduler_class, "") == "sigmas":
        return {"sigmas": tuple(float(sigma) for sigma in values)}
    name = scheduler_class.__name__
    if "timesteps" not in inspect.signature(scheduler_class.set_timesteps).parameters:
        raise ValueError(f"diffusers' {name} takes no custom sigmas: use sampler euler")
    table = TrainingSigmas(scheduler_config)
    timesteps = whole_timesteps(scheduler_config, values)
    whole = all(
        math.isclose(float(sigma), float(table.sigmas[t]), rel_tol=TOLERANCE)
        for sigma, t in zip(values, timesteps, strict=False)
    )
    if float(values[-1]) != 0.0 or not whole:
        raise ValueError(
            f"diffusers' {name} runs only sigmas at whole training timesteps ending in 0 "
            f"(simple, ddim_uniform, beta, SDTurboScheduler): use sampler euler for these"
        )
    return {"timesteps": tuple(timesteps)}
