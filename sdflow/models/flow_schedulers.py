"""The flow-matching schedulers the sampling loop runs on SD3 and Flux (sdflow.models.flow picks one):
diffusers' own, with what the loop asks of every scheduler. Their own module, imported when a flow
model samples, because diffusers' flow schedulers import scipy."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
)


class _FlowMethods:
    """What the sampling loop asks of every scheduler, for flow matching."""

    init_noise_sigma = 1.0

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """(1 - sigma) x0 + sigma n at ``timesteps`` (values of this schedule's timesteps)."""
        schedule = self.timesteps.to(timesteps.device)
        index = [int((schedule == t).nonzero()[0]) for t in timesteps.flatten()]
        sigma = self.sigmas.to(original.device, original.dtype)[index]
        sigma = sigma.reshape(-1, *[1] * (original.ndim - 1))
        return (1.0 - sigma) * original + sigma * noise


class FlowEuler(_FlowMethods, FlowMatchEulerDiscreteScheduler):
    """diffusers' FlowMatchEulerDiscreteScheduler (shift, dynamic shifting) for the sampling loop."""


class FlowHeun(_FlowMethods, FlowMatchHeunDiscreteScheduler):
    """diffusers' FlowMatchHeunDiscreteScheduler (a fixed shift only) for the sampling loop."""


def _dpm_config(config: dict[str, Any]) -> dict[str, Any]:
    """DPM++ 2M on flow sigmas: the flow scheduler's shift becomes DPMSolver's flow_shift."""
    return {
        "num_train_timesteps": config.get("num_train_timesteps", 1000),
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "prediction_type": "flow_prediction",
        "use_flow_sigmas": True,
        "flow_shift": config.get("shift", 1.0),
        "use_dynamic_shifting": bool(config.get("use_dynamic_shifting")),
        **{
            k: config[k]
            for k in ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len")
            if k in config
        },
    }


# sampler name -> (scheduler class, its config from the checkpoint's flow-matching scheduler config)
FLOW_SAMPLERS: dict[str, tuple[type, Any]] = {
    "euler": (FlowEuler, dict),
    "heun": (FlowHeun, lambda c: {k: c[k] for k in ("num_train_timesteps", "shift") if k in c}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, _dpm_config),
}
