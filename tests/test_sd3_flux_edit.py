"""img2img and inpainting on SD3 and Flux equal diffusers' Img2Img / Inpaint pipelines on the tiny
built-ins: VAEEncode applies the VAE's shift, AddNoise noises by flow matching ((1 - s) x0 + s n),
DenoiseLoop blends the kept area re-noised to the next step."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3InpaintPipeline,
)
from PIL import Image as PILImage
from workflows import DECODE, LOOP, decoded_pixels, img2img, max_diff
from workflows import IMG2IMG as IMG2IMG_NODES

from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PICTURE = ROOT / "examples" / "inputs" / "shapes.png"
MASK = ROOT / "examples" / "inputs" / "shapes_mask.png"
LEVEL = 1 / 255
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry"
STEPS = 4
CASES = {  # checkpoint -> (img2img pipeline, inpaint pipeline, cfg)
    "tiny-sd3": (StableDiffusion3Img2ImgPipeline, StableDiffusion3InpaintPipeline, 4.0),
    "tiny-flux": (FluxImg2ImgPipeline, FluxInpaintPipeline, 1.0),
}


def graph(checkpoint: str, cfg: float) -> str:
    return img2img(
        {"seed": 0, "sampler": "euler", "strength": 0.6},
        flow=True,
        ckpt={"checkpoint": f'"builtin:{checkpoint}"'},
        positive={"text": f'"{PROMPT}"'},
        negative={"text": f'"{NEGATIVE}"'},
        schedule={"steps": STEPS},
        picture={"path": f'"{PICTURE}"'},
        denoised={"cfg": cfg},
        mask={"type": "LoadMask", "path": f'"{MASK}"'},
        masked={**IMG2IMG_NODES["encoded"], "mask": "!link mask"},
        inpaint_noised={**IMG2IMG_NODES["noised"], "latent": "!link masked"},
        inpainted={**LOOP, "latent": "!link inpaint_noised", "cfg": cfg},
        inpaint_decoded={**DECODE, "latent": "!link inpainted"},
    )


def reference(cls: type, checkpoint: str, cfg: float, seed: int, **kwargs: Any) -> Any:
    """The pipeline's numpy output; Flux (cfg 1) at diffusers' default distilled guidance 3.5."""
    pipe = cls.from_pretrained(str(BUILTIN / checkpoint))
    pipe.set_progress_bar_config(disable=True)
    extra = {"negative_prompt": NEGATIVE} if cfg > 1 else {}
    call = functools.partial(
        pipe,
        PROMPT,
        image=PILImage.open(PICTURE).convert("RGB"),
        num_inference_steps=STEPS,
        guidance_scale=cfg if cfg > 1 else 3.5,
        generator=torch.Generator().manual_seed(seed),
        **extra,
        **kwargs,
    )
    if cls is not StableDiffusion3InpaintPipeline:
        return call(output_type="np").images
    # diffusers' SD3 inpaint pipeline decodes without the VAE's shift_factor (its txt2img and img2img
    # pipelines apply it): take its latents and decode them as those do.
    latents, vae = call(output_type="latent").images, pipe.vae
    with torch.no_grad():
        pixels = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
    return pipe.image_processor.postprocess(pixels, output_type="np")


@pytest.mark.parametrize("checkpoint", list(CASES))
def test_img2img_equals_the_img2img_pipeline(graph_runner: Runner, checkpoint: str) -> None:
    pipe, _, cfg = CASES[checkpoint]
    ours = decoded_pixels(graph_runner, graph(checkpoint, cfg), {"seed": 5, "strength": 0.6})
    theirs = reference(pipe, checkpoint, cfg, 5, strength=0.6, height=64, width=64)
    assert max_diff(ours, theirs) <= LEVEL
    weaker = decoded_pixels(graph_runner, graph(checkpoint, cfg), {"seed": 5, "strength": 0.3})
    assert max_diff(ours, weaker) > 5 * LEVEL  # strength really chooses where the schedule starts


@pytest.mark.parametrize("checkpoint", list(CASES))
def test_inpaint_equals_the_inpaint_pipeline(graph_runner: Runner, checkpoint: str) -> None:
    _, pipe, cfg = CASES[checkpoint]
    ours = decoded_pixels(
        graph_runner, graph(checkpoint, cfg), {"seed": 2, "strength": 1.0}, "inpaint_decoded"
    )
    mask = PILImage.open(MASK).convert("L")
    theirs = reference(pipe, checkpoint, cfg, 2, mask_image=mask, strength=1.0, height=64, width=64)
    assert max_diff(ours, theirs) <= LEVEL
