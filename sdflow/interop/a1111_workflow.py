"""The sdflow workflow of an A1111 run (a Plan): txt2img, img2img from an init picture, LoRAs from
the prompt and the hires fix, with the prompts, seed, checkpoint (and init picture) as inputs."""

from __future__ import annotations

from typing import Any

from sdflow.graphs.model import InputRef, InputSpec, Link, NodeSpec, Workflow
from sdflow.interop.a1111_params import Pass, Plan
from sdflow.models.resolver import BUILTIN_PREFIX, builtin_names


def checkpoint_name(model: str | None) -> str | None:
    """The checkpoint for A1111's model name: a builtin's name ('shapes', as sdflow writes it) is
    that builtin, any other name is looked up in the model folders when the workflow runs."""
    if model and model in builtin_names():
        return f"{BUILTIN_PREFIX}{model}"
    return model


class _Builder:
    def __init__(self) -> None:
        self.workflow = Workflow(file=None)

    def add(self, node_id: str, type_name: str, **fields: Any) -> Link:
        self.workflow.nodes[node_id] = NodeSpec(node_id, type_name, fields)
        return Link(node_id)

    def input(self, name: str, kind: str, value: Any, description: str = "") -> InputRef:
        required = value is None
        self.workflow.inputs[name] = InputSpec(name, kind, value, required, description)
        return InputRef(name)


def build(plan: Plan, checkpoint: str | None, init_image: str | None) -> Workflow:
    """The workflow of ``plan`` on ``checkpoint`` (None: a required input); ``init_image`` is the
    init picture's path for img2img (None with a strength: a required input)."""
    b = _Builder()
    ckpt = b.add("ckpt", "LoadCheckpoint", checkpoint=b.input("checkpoint", "str", checkpoint))
    model, clip = Link("ckpt", "model"), Link("ckpt", "clip")
    for index, lora in enumerate(plan.loras, 1):
        node = b.add(
            f"lora_{index}",
            "LoadLoRA",
            model=model,
            clip=clip,
            file=lora.name,
            strength_model=lora.unet,
            strength_clip=lora.te,
        )
        model, clip = Link(node.node, "model"), Link(node.node, "clip")
    vae = Link(ckpt.node, "vae")
    width, height = plan.size
    first = plan.first
    prompts = _prompts(b, plan, clip, "", InputRef("prompt"), InputRef("negative"))
    b.input("prompt", "str", first.prompt)
    b.input("negative", "str", first.negative)
    seed = b.input("seed", "int", plan.seed)
    if plan.strength is None:
        start = b.add("empty", "EmptyLatent", width=width, height=height)
        noise: dict[str, Any] = {"seed": seed}
    else:
        picture = b.add("picture", "LoadImage", path=b.input("image", "str", init_image, "the init picture"))
        resized = b.add(
            "resized", "ImageScale", image=Link(picture.node, "image"), width=width, height=height
        )
        start = b.add("encoded", "VAEEncode", vae=vae, image=resized, seed=seed)
        noise = {"seed": None, "strength": b.input("strength", "float", plan.strength, "denoising strength")}
    latent = _sample(b, "", model, prompts, first, start, noise)
    if plan.hires is not None:
        hires = plan.hires
        hires_width, hires_height = hires.size
        if hires.latent_mode is not None:
            upscaled = b.add(
                "upscaled", "LatentUpscale", latent=latent, width=hires_width, height=hires_height,
                mode=hires.latent_mode,
            )  # fmt: skip
            noise = {"seed": None, "strength": hires.strength}
        else:
            small = b.add("decoded_base", "VAEDecode", vae=vae, latent=latent)
            large = b.add(
                "scaled", "ImageScale", image=small, width=hires_width, height=hires_height,
                resample=hires.pixel_filter,
            )  # fmt: skip
            upscaled = b.add("reencoded", "VAEEncode", vae=vae, image=large, seed=seed)
            noise = {"seed": None, "strength": hires.strength}
        second = hires.second
        same = (second.prompt, second.negative) == (first.prompt, first.negative)
        hires_prompts = prompts if same else _prompts(b, plan, clip, "hires_", second.prompt, second.negative)
        latent = _sample(b, "hires_", model, hires_prompts, second, upscaled, noise)
    image = b.add("decoded", "VAEDecode", vae=vae, latent=latent)
    b.add("save", "SaveImage", image=image, filename_prefix="a1111")
    return b.workflow


def _prompts(
    b: _Builder, plan: Plan, clip: Link, prefix: str, prompt: Any, negative: Any
) -> tuple[Link, Link]:
    """The two CLIPEncodes of a pass, weighting as A1111 does, with the clip skip."""
    extra: dict[str, Any] = {"weighting": plan.weighting}
    if plan.clip_skip:
        extra["clip_skip"] = plan.clip_skip
    positive = b.add(f"{prefix}positive", "CLIPEncode", clip=clip, text=prompt, **extra)
    return positive, b.add(f"{prefix}negative", "CLIPEncode", clip=clip, text=negative, **extra)


def _sample(
    b: _Builder, prefix: str, model: Link, prompts: tuple[Link, Link], run: Pass, latent: Link, noise: dict
) -> Link:
    """Scheduler, AddNoise and DenoiseLoop of one pass; the loop's latent."""
    sigmas = {"sigmas": run.sigmas} if run.sigmas != "default" else {}
    schedule = b.add(
        f"{prefix}schedule", "Scheduler", model=model, sampler=run.sampler, steps=run.steps, **sigmas
    )
    noised = b.add(f"{prefix}noised", "AddNoise", latent=latent, schedule=schedule, **noise)
    positive, negative = prompts
    loop = "base" if not prefix else "refined"
    return b.add(
        loop, "DenoiseLoop", model=model, positive=positive, negative=negative, latent=noised, cfg=run.cfg
    )
