"""DenoiseLoop: the sampling loop with classifier-free guidance, written out."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from pydantic import Field

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops import comfy_loop, control, grounding, guidance, image_prompt, regions_unet
from sdflow.nodes.ops.guidance import Guidance
from sdflow.nodes.ops.placement import placement
from sdflow.nodes.ops.regions_unet import LATENT_TO_PIXELS, repeat_to
from sdflow.nodes.ops.samplers import denoised_estimate, seed_noise_sampler
from sdflow.nodes.ops.schedule_window import end_count
from sdflow.nodes.ops.split import END_ALIASES, EndPoint, chosen, conflicts, describe
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Conditioning, Cut, Latent, Model


class DenoiseLoop(Node):
    """Denoise a noised latent with the UNet, guided by positive and negative conditioning.

    A latent with a noise mask is inpainted as diffusers' StableDiffusionInpaintPipeline does: a
    4-channel UNet's result is blended after every step with the original latent re-noised to the
    next timestep (kept where the mask is 0); a 9-channel inpainting UNet instead reads the mask
    and the masked-image latent next to the latent at every step.

    With a comfy-mode schedule (Scheduler ``mode: comfy``, what `sdflow import comfy` writes) the loop
    is ComfyUI's instead: its k-diffusion sampler over its sigma table, the UNet wrapped as ComfyUI's
    ModelSamplingDiscrete, CFG on the clean estimates, the sampler's noise seeded with AddNoise's
    seed, and a noise mask blended at every model call (docs/samplers.md).
    """

    version: ClassVar[int] = 2
    outputs: ClassVar[dict[str, type]] = {"latent": Latent}
    same_family: ClassVar[tuple[str, ...]] = ("model", "positive", "negative")
    repeats: ClassVar[bool] = True

    model: Model = Field(description="the UNet, from LoadCheckpoint")
    positive: Conditioning = Field(description="what to draw")
    negative: Conditioning = Field(description="what to steer away from (CLIPEncode of '' for none)")
    latent: Latent = Field(description="a latent noised by AddNoise: it carries the schedule")
    cfg: float = Field(7.5, ge=0.0, le=100.0, description="guidance scale; <= 1 disables guidance")
    end_at: EndPoint | None = Field(
        None,
        description=(
            "stop early and output the still-noisy latent, for an AddNoise to continue: after this step "
            "of the full schedule (an int: ComfyUI's end_at_step with leftover noise) or at this fraction "
            "of it (a float: diffusers' denoising_end, SDXL base -> refiner); null = denoise fully"
        ),
    )
    denoise_end: float = Field(
        1.0, gt=0.0, le=1.0, description="alias of end_at as a fraction (diffusers' denoising_end); 1 = fully"
    )
    end_step: int | None = Field(None, ge=1, le=MAX_STEPS, description="alias of end_at as a step")
    cfg_end: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="guide only this fraction of the loop's steps; the rest run the positive alone (faster)",
    )

    @classmethod
    def precheck(cls, constants: dict[str, Any], scope: RunScope) -> list[tuple[str, str]]:
        return conflicts(constants, "end_at", END_ALIASES)

    def run(self, ctx: RunContext) -> dict[str, Any]:
        state = self.latent.noise
        comfy = state is not None and state.schedule.mode == "comfy"
        latent, _ = self.sample(ctx, guidance.cfg(self.positive, self.negative, self.cfg, comfy=comfy))
        return {"latent": latent}

    def sample(self, ctx: RunContext, guide: Guidance) -> tuple[Latent, torch.Tensor]:
        """The denoised latent, guided as ``guide`` says (this node's cfg for DenoiseLoop itself, a
        Guider's rule for the custom samplers), and the last step's estimate of the clean latent
        (ComfyUI's denoised_output)."""
        state = self.latent.noise
        if self.latent.cut is not None:
            raise ctx.error(
                f"this latent stopped {describe(self.latent.cut)} (end_at): pass it through AddNoise "
                "first, which continues from there without adding noise",
                "latent",
            )
        if state is None:
            raise ctx.error("this latent was never noised: pass it through AddNoise first", "latent")
        self._check_families(ctx, guide)
        if state.schedule.mode == "comfy":
            return comfy_loop.sample(self, ctx, guide, state)
        scheduler = state.schedule.make(ctx.device, tuple(self.latent.samples.shape[-2:]))
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(state.start_index)
        timesteps = scheduler.timesteps[state.start_index :]
        end, end_field = chosen(self.__dict__, "end_at", END_ALIASES)
        cut = None
        if isinstance(end, float):
            timesteps = timesteps[: end_count(scheduler, timesteps, end)]
            cut = Cut((state.start_index + len(timesteps)) // scheduler.order, end)
        elif end is not None:
            timesteps = timesteps[: self._steps_to(end, end_field, scheduler, state.start_index, ctx)]
            if state.start_index + len(timesteps) < len(scheduler.timesteps):
                cut = Cut(end)
        generator = torch.Generator(device="cpu")
        generator.set_state(state.rng_state)
        step_kwargs = {"generator": generator} if _takes(scheduler.step, "generator") else {}
        seed_noise_sampler(scheduler, [generator] * self.latent.samples.shape[0])

        device, dtype = placement(self.model.unet)  # the execution device under model offload
        x = self.latent.samples.to(device, dtype)
        control_steps = len(scheduler.timesteps) - state.start_index  # the control windows' 100%
        predict = self.predictor(ctx, guide, x, control_steps)
        mask = self._blend_mask(x, ctx)
        if mask is not None:
            original, noise = state.clean.to(x.device, x.dtype), state.noise.to(x.device, x.dtype)
        # The timesteps after each step, for that blend: past a step cut the schedule goes on (the
        # next pass continues it); past a fraction cut, as in diffusers, the original is kept clean.
        stepped = end is not None and not isinstance(end, float)
        following = scheduler.timesteps[state.start_index :] if stepped else timesteps
        guided_count = round(self.cfg_end * len(timesteps)) if guide.guiding else 0
        denoised = x

        def blended(x: torch.Tensor, index: int) -> torch.Tensor:
            """Keep the original outside the mask, re-noised to the *next* timestep, as diffusers."""
            if mask is None:
                return x
            kept = original
            if index < len(following) - 1:
                kept = scheduler.add_noise(original, noise, following[index + 1 : index + 2])
            return (1 - mask) * kept + mask * x

        with torch.inference_mode():
            for index, t in enumerate(timesteps):
                guiding = index < guided_count
                predictions = predict(scheduler.scale_model_input(x, t), t, index, guiding)
                prediction = guide.combine(predictions) if guiding else predictions[-1]
                output = scheduler.step(prediction, t, x, **step_kwargs)
                x = blended(output.prev_sample, index)
                denoised = denoised_estimate(scheduler, output, x)
                ctx.step(index + 1, len(timesteps), x)
        latent = self.latent.with_(
            samples=x,
            noise=state if cut is not None else None,
            rng_state=generator.get_state(),
            cut=cut,
        )
        return latent, denoised

    def predictor(
        self, ctx: RunContext, guide: Guidance, x: torch.Tensor, control_steps: int
    ) -> Callable[[torch.Tensor, Any, int, bool], list[torch.Tensor]]:
        """``predict(scaled, t, index, guiding)``: the UNet's predictions for the scaled latent at
        timestep ``t`` of step ``index``, one per guidance side in batch order (the positive alone,
        with the controls it carries, when not guiding: past cfg_end). Everything the UNet reads besides the
        latent (text, SDXL's extras, inpainting channels, controls, IP-Adapter tokens, unCLIP
        labels, areas) is made here once per loop."""
        sides = guide.sides
        unet = self.model.unet
        device, dtype = x.device, x.dtype
        embeds = self._embeddings(x.shape[0], sides, ctx).to(device, dtype)
        added = self._added_cond_kwargs(x, sides, device, dtype)
        extra = self._extra_channels(x, sides, ctx)
        halves = [side for side, _ in sides]
        controls = control.plan(halves, x.shape[0], tuple(x.shape[-2:]))
        regional = any(half.regional for half in halves)
        if regional and controls:
            message = "ControlNets with combined, area or timestep-range conditioning are not supported yet"
            raise ctx.error(message, "positive")
        images = image_prompt.feed(self.model, x.shape[0], guide.guiding, device, dtype)
        if images is not None and len(sides) > 2:
            raise ctx.error("IP-Adapters with a DualCFGGuider are not supported yet", "model")
        if regional and images is not None:
            message = "IP-Adapters with combined, area or timestep-range conditioning are not supported yet"
            raise ctx.error(message, "model")
        problem = image_prompt.unclip_problem(self.model, halves)
        if problem:
            raise ctx.error(problem, "positive")
        labels = image_prompt.class_labels(self.model, halves, x.shape[0], device, dtype)
        if regional and labels is not None:
            message = "unCLIP models with combined, area or timestep-range conditioning are not supported yet"
            raise ctx.error(message, "model")
        try:
            unet, boxes = grounding.feed(
                unet, halves, x.shape[0], tuple(x.shape[-2:]), device, dtype, regional
            )
        except grounding.GroundingMismatch as exc:
            raise ctx.error(str(exc), "positive") from None
        pieces = regions_unet.sides(self.model, x, sides) if regional else []
        batch, copies = x.shape[0], len(sides)
        alone = control.positive_alone(controls, batch, copies)  # past cfg_end: the positive's only

        def predict(scaled: torch.Tensor, t: Any, index: int, guiding: bool) -> list[torch.Tensor]:
            if regional:
                predicted = regions_unet.predictions(self.model.unet, scaled, t, extra, pieces, guiding)
                return list(predicted.chunk(copies if guiding else 1))
            model_input = torch.cat([scaled] * copies) if guiding else scaled
            rows = slice(None) if guiding else slice(batch * (copies - 1), None)  # the positive alone
            text = embeds[rows]
            added_rows = None if added is None else {k: v[rows] for k, v in added.items()}
            planned = controls if guiding else alone
            residuals = (  # a ControlNet reads the 4 latent channels, before any inpainting ones
                control.unet_kwargs(planned, model_input, t, text, added_rows, index, control_steps)
                if planned
                else {}
            )
            if extra is not None:
                model_input = torch.cat([model_input, extra[rows]], dim=1)
            extras = {} if labels is None else {"class_labels": labels[rows]}
            if boxes is not None:  # GLIGEN (the SD3/Flux denoisers take no cross_attention_kwargs)
                extras["cross_attention_kwargs"] = boxes.kwargs(rows, index, control_steps)
            prediction = unet(
                model_input,
                t,
                encoder_hidden_states=text
                if images is None
                else images.states(text, guiding, index, control_steps),
                added_cond_kwargs=added_rows,
                return_dict=False,
                **residuals,
                **extras,
            )[0]
            return list(prediction.chunk(copies)) if guiding else [prediction]

        return predict

    def _steps_to(self, end_step: int, field: str, scheduler: Any, start: int, ctx: RunContext) -> int:
        """How many timesteps from index ``start`` reach the end of step ``end_step`` (a second-order
        scheduler runs two per step, as diffusers' img2img counts them)."""
        count = end_step * scheduler.order - start
        if count <= 0:
            raise ctx.error(
                f"{field} {end_step} is not after the step this latent starts at "
                f"({start // scheduler.order}): nothing would be denoised",
                field,
            )
        return count

    def _check_families(self, ctx: RunContext, guide: Guidance) -> None:
        """Conditioning must come from a text encoder of the model's own family (positive first)."""
        family = self.model.family
        last = len(guide.sides) - 1
        for index, (conditioning, _) in reversed(list(enumerate(guide.sides))):
            name = "positive" if index == last else "negative"
            if conditioning.family != family:
                raise ctx.error(
                    f"this conditioning was encoded by a {conditioning.family} text encoder but the model "
                    f"is {family}: encode the prompt with the clip of the checkpoint the model comes from",
                    name,
                )
        channels = int(self.latent.samples.shape[1])
        if channels != family.latent_channels:
            raise ctx.error(
                f"this latent has {channels} channels but the model ({family}) reads "
                f"{family.latent_channels}: encode with the VAE of the checkpoint the model comes from",
                "latent",
            )

    def _added_cond_kwargs(
        self, x: torch.Tensor, sides: tuple, device: torch.device, dtype: torch.dtype
    ) -> dict[str, torch.Tensor] | None:
        """The family's extra UNet inputs (SDXL: pooled text embeds and time ids), in batch order."""
        size = (x.shape[-1] * LATENT_TO_PIXELS, x.shape[-2] * LATENT_TO_PIXELS)
        return self.model.family.added_cond_kwargs(list(sides), x.shape[0], size, device, dtype)

    @classmethod
    def run_batch(cls, nodes: list[Node], ctx: RunContext) -> list[dict[str, Any]] | None:
        """Several whole txt2img/img2img loops (one image each) sharing model, schedule, cfg and shapes,
        as one batch; each keeps its own generator, so each result equals its own run's. None when
        they cannot share a batch (inpainting, split schedules, extra UNet inputs such as SDXL's)."""
        from sdflow.nodes.ops.denoise_batch import run_together

        loops = [node for node in nodes if isinstance(node, DenoiseLoop)]
        if len(loops) != len(nodes):
            return None
        for loop in loops:
            if chosen(loop.__dict__, "end_at", END_ALIASES)[0] is not None or loop.latent.cut is not None:
                return None
            if loop.latent.noise is not None and loop.latent.noise.schedule.mode == "comfy":
                return None  # comfy mode runs each loop as ComfyUI does, on its own
            loop._check_families(ctx, guidance.cfg(loop.positive, loop.negative, loop.cfg))
            if loop.cfg_end < 1.0 or loop.positive.regional or loop.negative.regional:
                return None  # predicted piece by piece, each on its own
            if loop.positive.concat is not None or loop.negative.concat is not None:
                return None  # an image latent beside the latent (InstructPix2Pix)
            if any(side.controls or side.boxes for side in (loop.positive, loop.negative)):
                return None  # controls (diffusers' one call per control) and GLIGEN boxes run on their own
            if loop.model.image_prompts or loop.model.image_noising is not None:
                return None  # IP-Adapter tokens and unCLIP class labels: each runs on its own
            x = loop.latent.samples
            sides = guidance.cfg(loop.positive, loop.negative, loop.cfg).sides
            if loop._added_cond_kwargs(x, sides, x.device, x.dtype) is not None:
                return None
        return run_together(loops, ctx)

    def _extra_channels(self, x: torch.Tensor, sides: tuple, ctx: RunContext) -> torch.Tensor | None:
        """What the UNet reads next to the latent, per side in batch order: a 9-channel inpainting
        UNet's [mask, masked-image latent]; the image latent a conditioning carries (InstructPix2Pix)."""
        if not self.model.is_inpainting:
            return self._concat_channels(x, sides, ctx)
        masked_image = self.latent.masked_image
        if self.latent.noise_mask is None or masked_image is None:
            raise ctx.error(
                "this is a 9-channel inpainting model: it needs a latent from VAEEncode with a mask",
                "latent",
            )
        mask = _batch_of(self.checked_mask(x, ctx), x.shape[0])
        masked = _batch_of(masked_image.value(), x.shape[0])
        extra = torch.cat([mask.to(x.device, x.dtype), masked.to(x.device, x.dtype)], dim=1)
        return torch.cat([extra] * len(sides))

    def _concat_channels(self, x: torch.Tensor, sides: tuple, ctx: RunContext) -> torch.Tensor | None:
        """Each side's image latent (ComfyUI's concat_latent_image), for a UNet reading more channels
        than the latent has; None for a plain UNet."""
        wanted = self.model.unet.config.in_channels - x.shape[1]
        if wanted <= 0:
            return None
        parts = []
        for index, (side, _) in enumerate(sides):
            name = "positive" if index == len(sides) - 1 else "negative"
            if side.concat is None or side.concat.shape[1] != wanted:
                raise ctx.error(
                    f"this UNet reads {wanted} channels besides the latent's {x.shape[1]}: give it "
                    "conditioning carrying an image latent (InstructPixToPixConditioning)",
                    name,
                )
            if side.concat.shape[-2:] != x.shape[-2:]:
                raise ctx.error(
                    f"the conditioning's image latent is {tuple(side.concat.shape[-2:])} but the latent "
                    f"is {tuple(x.shape[-2:])}: use the latent InstructPixToPixConditioning gives",
                    name,
                )
            parts.append(_batch_of(side.concat, x.shape[0]).to(x.device, x.dtype))
        return torch.cat(parts)

    def _blend_mask(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor | None:
        """The noise mask a 4-channel model blends with after every step (None: no blending)."""
        if self.latent.noise_mask is None or self.model.is_inpainting:
            return None
        return self.checked_mask(x, ctx).to(x.device, x.dtype)

    def checked_mask(self, x: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        mask = self.latent.noise_mask
        assert mask is not None
        if mask.shape[-2:] != x.shape[-2:]:
            raise ctx.error(
                f"the latent's noise mask is {tuple(mask.shape[-2:])} but the latent is "
                f"{tuple(x.shape[-2:])}: resize them together (LatentUpscale does)",
                "latent",
            )
        return mask

    def _embeddings(self, batch: int, sides: tuple, ctx: RunContext) -> torch.Tensor:
        """Each side's conditioning repeated to the latent batch, in batch order. A long prompt on
        one side is met by empty-prompt chunks on the others (as A1111 and ComfyUI pad)."""
        parts = [side for side, _ in sides]
        tokens = max(p.tokens for p in parts)
        empty = next((p.empty for p in parts if p.empty is not None), None)
        embeds = []
        for index, part in enumerate(parts):
            name = "positive" if index == len(parts) - 1 else "negative"
            try:
                part = part.padded_to(tokens, empty)
            except ValueError as exc:
                raise ctx.error(f"{exc}: positive and negative must be whole 77-token chunks", name) from None
            if batch % part.embeds.shape[0]:
                raise ctx.error(
                    f"{part.embeds.shape[0]} prompts do not divide the latent batch of {batch}: "
                    f"make the latent batch a multiple of the number of prompts",
                    name,
                )
            embeds.append(repeat_to(part.embeds, batch))
        return torch.cat(embeds)


def _batch_of(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    return tensor if tensor.shape[0] == batch else tensor.repeat(batch // tensor.shape[0], 1, 1, 1)


def _takes(function: Any, name: str) -> bool:
    return name in inspect.signature(function).parameters
