"""Scheduler: choose the noise schedule (sampler, steps, sigmas) once, for every loop that uses it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sdflow.models.flow import flow_sigmas
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops.comfy_tables import comfy_problem, ksampler_sigmas
from sdflow.nodes.ops.samplers import (
    SAMPLERS,
    Refused,
    SamplerName,
    SigmasName,
    karras_samplers,
    scheduler_for,
    step_limit,
    supports_karras,
    unavailable,
)
from sdflow.nodes.ops.sigma_schedules import SCHEDULES, TURBO_TIMESTEPS, calculate_sigmas, explicit, refusal
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Model, Schedule

SamplingMode = Literal["diffusers", "comfy"]


def comfy_schedule(model: Model, sampler: str, sigmas: str, steps: int, ctx: RunContext) -> Schedule:
    """Comfy mode's Schedule: KSampler's sigma table for ``sigmas`` (default = normal) and ``steps``."""
    problem = comfy_problem(sampler)
    if problem:
        raise ctx.error(problem, "sampler")
    family = model.family
    prediction = model.scheduler_config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction"):
        raise ctx.error(f"comfy mode runs eps and v_prediction models, not '{prediction}'", "mode")
    try:
        table = ksampler_sigmas(model.scheduler_config, sampler, sigmas, steps)
    except ValueError as exc:
        raise ctx.error(str(exc), "sigmas") from None
    cls, config = scheduler_for("euler", model.scheduler_config)  # unused in comfy mode
    values = tuple(float(sigma) for sigma in table)
    return Schedule(
        sampler, len(values) - 1, cls, config, model.is_inpainting, family=family, comfy_sigmas=values
    )


class Scheduler(Node):
    """Pick a sampler and step count; AddNoise and DenoiseLoop both follow this schedule."""

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"schedule": Schedule}

    model: Model = Field(description="the model whose training noise schedule to use")
    sampler: SamplerName = Field("euler", description="sampling algorithm")
    steps: int = Field(
        20,
        ge=1,
        le=MAX_STEPS,
        description="denoising steps for the full schedule (diffusers' schedulers fail near 1000)",
    )
    sigmas: SigmasName = Field(
        "default",
        description=(
            "step spacing: the sampler's own, or karras (ComfyUI's 'karras' scheduler; for "
            + ", ".join(karras_samplers())
            + "); dpmpp_2m_karras is dpmpp_2m with karras; or a ComfyUI schedule computed as ComfyUI "
            + "does (normal, exponential, sgm_uniform, simple, ddim_uniform, beta, linear_quadratic, "
            + "kl_optimal, sd_turbo; see docs/samplers.md for which samplers take them)"
        ),
    )

    mode: SamplingMode = Field(
        "diffusers",
        description=(
            "diffusers: diffusers' scheduler for the sampler runs the steps; comfy: the sampler as "
            "ComfyUI runs it (its sigma table, model wrapper, CFG and noise), for ComfyUI's picture "
            "from the same seed (what `sdflow import comfy` writes; SD3 / Flux run as diffusers; see "
            "docs/samplers.md)"
        ),
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        sampler = constants.get("sampler", "euler")
        if constants.get("mode") == "comfy":
            problem = comfy_problem(sampler) if isinstance(sampler, str) else None
            return [("sampler", problem)] if problem else []
        if isinstance(sampler, str) and sampler not in SAMPLERS:
            return [("sampler", unavailable(sampler))]
        if constants.get("sigmas") == "karras" and isinstance(sampler, str) and not supports_karras(sampler):
            message = f"sampler '{sampler}' has no Karras sigmas: use one of {', '.join(karras_samplers())}"
            return [("sigmas", message + ", or sigmas: default")]
        sigmas = constants.get("sigmas")
        if sigmas in SCHEDULES and sigmas != "karras" and isinstance(sampler, str):
            problem = refusal(sampler, SAMPLERS[sampler][0], sigmas)
            if problem:
                return [("sigmas", problem)]
        if (
            sigmas == "sd_turbo"
            and isinstance(constants.get("steps"), int)
            and constants["steps"] > TURBO_TIMESTEPS
        ):
            return [("steps", f"sigmas sd_turbo takes at most {TURBO_TIMESTEPS} steps")]
        steps = constants.get("steps")
        if isinstance(sampler, str) and isinstance(steps, int) and steps > step_limit(sampler, MAX_STEPS):
            return [("steps", f"sampler '{sampler}' takes at most {step_limit(sampler, MAX_STEPS)} steps")]
        return []

    def run(self, ctx: RunContext) -> dict[str, Any]:
        if self.mode == "comfy":
            if not self.model.family.flow:
                return {"schedule": comfy_schedule(self.model, self.sampler, self.sigmas, self.steps, ctx)}
            # SD3 / Flux run as diffusers mode, ComfyUI's normal being the flow scheduler's own spacing
            ctx.warn(
                f"comfy mode runs the UNet families: {self.model.family.label} samples in diffusers mode",
                "mode",
            )
            sigmas = "default" if self.sigmas == "normal" else self.sigmas
            return self.model_copy(update={"mode": "diffusers", "sigmas": sigmas}).run(ctx)
        if self.sampler not in SAMPLERS:
            raise ctx.error(unavailable(self.sampler), "sampler")
        family = self.model.family
        try:
            cls, config = scheduler_for(self.sampler, self.model.scheduler_config, self.sigmas, family)
        except Refused as exc:
            raise ctx.error(str(exc), exc.field) from None
        except ValueError as exc:  # a sampler given by a link-free input the precheck could not see
            raise ctx.error(str(exc), "sigmas") from None
        if self.steps > step_limit(self.sampler, MAX_STEPS):
            raise ctx.error(
                f"sampler '{self.sampler}' takes at most {step_limit(self.sampler, MAX_STEPS)} steps", "steps"
            )
        if self.sigmas in ("default", "karras"):
            schedule = Schedule(
                self.sampler, self.steps, cls, config, self.model.is_inpainting, family=family
            )
            return {"schedule": schedule}
        if family.flow:  # scheduler_for let through only a flow schedule this sampler takes
            table = flow_sigmas(self.sigmas, self.steps)
            return {"schedule": Schedule(self.sampler, self.steps, cls, config, sigmas=table, family=family)}
        problem = refusal(self.sampler, cls, self.sigmas)
        if problem:
            raise ctx.error(problem, "sigmas")
        if self.sigmas == "sd_turbo" and self.steps > TURBO_TIMESTEPS:
            raise ctx.error(f"sigmas sd_turbo takes at most {TURBO_TIMESTEPS} steps", "steps")
        try:
            table = calculate_sigmas(self.model.scheduler_config, self.sigmas, self.steps)
        except ValueError as exc:
            raise ctx.error(str(exc), "sigmas") from None
        fields = explicit(cls, self.model.scheduler_config, table, self.sigmas)
        schedule = Schedule(self.sampler, len(table) - 1, cls, config, self.model.is_inpainting, **fields)
        return {"schedule": schedule}
