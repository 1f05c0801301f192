"""SDXL through the ordinary nodes: size and aesthetic conditioning as diffusers uses them, clip skip,
the schedule hand-off fields, and the fp16 VAE upcast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from workflows import DECODE, DROP, LOOP, Fields, img2img, txt2img

from sdflow.cli import main
from sdflow.errors import NodeError
from sdflow.graphs import loads
from sdflow.models import checkpoints, detect, resolver
from sdflow.models.families import SD15, SDXL, SDXL_REFINER
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PROMPT = "a red circle on a blue background"


def workflow(
    positive_extra: Fields | None = None, negative_extra: Fields | None = None, **more: Fields
) -> str:
    """tiny-sdxl txt2img (3 euler steps; checkpoint, clip_skip, seed, end from inputs) with extra fields
    on each prompt and ``more`` nodes."""
    return txt2img(
        {"checkpoint": '"builtin:tiny-sdxl"', "clip_skip": 0, "seed": 3, "end": 1.0},
        flow=True,
        ckpt={"checkpoint": "!input checkpoint"},
        positive={"text": f'"{PROMPT}"', "clip_skip": "!input clip_skip", **(positive_extra or {})},
        negative={"clip_skip": "!input clip_skip", **(negative_extra or {})},
        schedule={"sampler": "euler", "steps": 3},
        denoised={"cfg": 5.0, "denoise_end": "!input end"},
        **more,
    )


def refine_workflow(picture: Path, positive_extra: Fields, negative_extra: Fields) -> str:
    """tiny-sdxl-refiner img2img of ``picture`` at strength 0.7 with extra fields on each prompt."""
    return img2img(
        flow=True,
        ckpt={"checkpoint": '"builtin:tiny-sdxl-refiner"'},
        positive={"text": f'"{PROMPT}"', **positive_extra},
        negative=negative_extra,
        picture={"path": f'"{picture}"'},
        encoded={"seed": 3},
        schedule={"sampler": "euler", "steps": 3},
        noised={"strength": 0.7},
        denoised={"cfg": 5.0},
    )


def pixels(runner: Runner, text: str, **inputs) -> np.ndarray:
    result = runner.run(loads(text, "sdxl.yaml"), inputs=inputs, outputs=["decoded"])
    return result["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


def diffusers_image(pipe, **kwargs) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    arguments = {
        "prompt": PROMPT,
        "negative_prompt": "",
        "num_inference_steps": 3,
        "guidance_scale": 5.0,
        "output_type": "np",
        "generator": torch.Generator().manual_seed(3),
    }
    return pipe(**{**arguments, **kwargs}).images


def test_size_conditioning_fields_match_diffusers_micro_conditioning(graph_runner: Runner) -> None:
    sizes = {"original_width": 128, "original_height": 96, "crop_left": 8, "crop_top": 4}
    ours = pixels(graph_runner, workflow(sizes, sizes))
    pipe = StableDiffusionXLPipeline.from_pretrained(str(BUILTIN / "tiny-sdxl"))
    theirs = diffusers_image(
        pipe, height=64, width=64, original_size=(96, 128), crops_coords_top_left=(4, 8), target_size=(64, 64)
    )
    defaults = pixels(graph_runner, workflow())
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(ours - defaults).max() > 1e-3  # the sizes really reach the UNet


def test_refiner_aesthetic_scores_default_to_diffusers_and_can_be_set(graph_runner: Runner) -> None:
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(BUILTIN / "tiny-sdxl-refiner"))
    picture = ROOT / "examples" / "inputs" / "shapes.png"
    from PIL import Image as PILImage

    image = PILImage.open(picture).convert("RGB")
    defaults = refine_workflow(picture, {}, {})
    scored = refine_workflow(picture, {"aesthetic_score": 9.0}, {"aesthetic_score": 1.0})
    for ours_text, theirs_kwargs in (
        (defaults, {}),
        (scored, {"aesthetic_score": 9.0, "negative_aesthetic_score": 1.0}),
    ):
        theirs = diffusers_image(pipe, image=image, strength=0.7, **theirs_kwargs)
        assert np.abs(pixels(graph_runner, ours_text) - theirs).max() <= 1e-4
    assert np.abs(pixels(graph_runner, defaults) - pixels(graph_runner, scored)).max() > 1e-3


def test_clip_skip_counts_from_sdxl_penultimate_layer_as_diffusers(graph_runner: Runner) -> None:
    ours = pixels(graph_runner, workflow(), clip_skip=1)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(BUILTIN / "tiny-sdxl"))
    # diffusers applies clip_skip to the positive prompt only; encode the negative with it by hand
    embeds = pipe.encode_prompt("", do_classifier_free_guidance=False, clip_skip=1)
    theirs = diffusers_image(
        pipe,
        height=64,
        width=64,
        clip_skip=1,
        negative_prompt=None,
        negative_prompt_embeds=embeds[0],
        negative_pooled_prompt_embeds=embeds[2],
    )
    assert np.abs(ours - theirs).max() <= 1e-4


@pytest.mark.parametrize(
    ("name", "family", "encoders"),
    [("tiny-sd15", SD15, 1), ("tiny-sdxl", SDXL, 2), ("tiny-sdxl-refiner", SDXL_REFINER, 1)],
)
def test_folders_are_detected_as_their_family(name: str, family, encoders: int) -> None:
    source = resolver.checkpoint(f"builtin:{name}")
    assert detect.folder_family(source.location) is family
    loaded = checkpoints.load(source, torch.device("cpu"), torch.float32)
    assert loaded.family is family
    assert 1 + len(loaded.more_text_encoders) == encoders == family.text_encoders


def test_fp16_keeps_a_force_upcast_vae_in_fp32_as_diffusers() -> None:
    source = resolver.checkpoint("builtin:tiny-sdxl")
    loaded = checkpoints.load(source, torch.device("cpu"), torch.float16)
    assert loaded.vae.config.force_upcast
    assert next(loaded.vae.parameters()).dtype == torch.float32
    assert next(loaded.unet.parameters()).dtype == torch.float16
    assert next(loaded.more_text_encoders[0].parameters()).dtype == torch.float16


def test_size_fields_are_refused_for_a_family_that_does_not_read_them(graph_runner: Runner) -> None:
    text = workflow({"target_width": 64, "target_height": 64}).replace(
        "builtin:tiny-sdxl", "builtin:tiny-sd15"
    )
    with pytest.raises(NodeError, match=r"target_width is read by SDXL only; this clip is SD 1\.x") as caught:
        pixels(graph_runner, text, checkpoint="builtin:tiny-sd15")
    assert caught.value.location.field == "target_width"
    refiner = workflow({"target_width": 64, "target_height": 64})
    with pytest.raises(NodeError, match="target_width is read by SDXL only; this clip is SDXL refiner"):
        pixels(graph_runner, refiner, checkpoint="builtin:tiny-sdxl-refiner")
    with pytest.raises(NodeError, match="aesthetic_score is read by the SDXL refiner only"):
        pixels(graph_runner, workflow({"aesthetic_score": 5.0}))


def test_half_a_size_is_refused_before_anything_runs(write_workflow, tmp_path: Path, capsys) -> None:
    path = write_workflow(workflow({"original_width": 128}))
    assert main(["validate", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert "node 'positive', field 'original_height'" in stderr
    assert "give original_width and original_height together" in stderr


def test_a_stopped_latent_must_be_resumed_by_add_noise(graph_runner: Runner) -> None:
    text = workflow(
        again={**LOOP, "latent": "!link denoised", "cfg": DROP},
        decoded_again={**DECODE, "latent": "!link again"},
    )
    result = graph_runner.run(loads(text, "stop.yaml"), inputs={"end": 0.5}, outputs=["denoised"])
    assert result["denoised.latent"].cut.fraction == 0.5 and result["denoised.latent"].cut.clean
    with pytest.raises(NodeError, match=r"stopped at 0.5 .*pass it through AddNoise") as caught:
        graph_runner.run(loads(text, "stop.yaml"), inputs={"end": 0.5}, outputs=["decoded_again"])
    assert caught.value.location.node == "again"
