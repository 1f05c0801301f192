"""InstructPixToPixConditioning on a tiny InstructPix2Pix UNet (8 input channels). ComfyUI's semantics
(plain CFG, the image latent beside the latent on both sides) equal diffusers'
StableDiffusionInstructPix2PixPipeline at image_guidance_scale 1: its 3-way guidance uncond +
g * (text - image) + 1 * (image - uncond) is then image + g * (text - image), plain CFG with the
image on both sides (its image-free uncond prediction drops out)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from workflows import Fields, decoded_pixels, max_diff, render

from sdflow.errors import SdflowError
from sdflow.formats.comfy_json import read
from sdflow.graphs.model import Link
from sdflow.interop.comfy import convert
from sdflow.runner import Runner

IMAGE = Path(__file__).resolve().parent.parent / "examples" / "inputs" / "red_circle.png"
PNG_LEVEL = 1 / 255
PROMPT, NEGATIVE = "make it a green square", "blurry"
STEPS, CFG, SEED = 4, 5.0, 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tool) -> Path:
    return tool("make_tiny_ip2p.py").make(tmp_path_factory.mktemp("ip2p") / "tiny-ip2p")


def nodes(folder: Path, image: Path = IMAGE) -> dict[str, Fields]:
    return {
        "ckpt": {"type": "LoadCheckpoint", "checkpoint": f'"{folder}"'},
        "positive": {"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": f'"{PROMPT}"'},
        "negative": {"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": f'"{NEGATIVE}"'},
        "picture": {"type": "LoadImage", "path": f'"{image}"'},
        "edit": {
            "type": "InstructPixToPixConditioning",
            "positive": "!link positive",
            "negative": "!link negative",
            "vae": "!link ckpt.vae",
            "pixels": "!link picture.image",
        },
        "schedule": {"type": "Scheduler", "model": "!link ckpt.model", "sampler": "euler", "steps": STEPS},
        "noised": {
            "type": "AddNoise",
            "latent": "!link edit.latent",
            "schedule": "!link schedule",
            "seed": SEED,
        },
        "denoised": {
            "type": "DenoiseLoop",
            "model": "!link ckpt.model",
            "positive": "!link edit.positive",
            "negative": "!link edit.negative",
            "latent": "!link noised",
            "cfg": CFG,
        },
        "decoded": {"type": "VAEDecode", "vae": "!link ckpt.vae", "latent": "!link denoised"},
    }


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def test_equals_diffusers_instruct_pix2pix_at_image_guidance_1(folder: Path, runner: Runner) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(folder, local_files_only=True)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        PROMPT,
        image=PILImage.open(IMAGE).convert("RGB"),
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        image_guidance_scale=1.0,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
    ).images
    ours = decoded_pixels(runner, render(nodes(folder)))
    assert max_diff(ours, expected) <= PNG_LEVEL, max_diff(ours, expected)


def test_the_image_steers_the_edit(folder: Path, runner: Runner, tmp_path: Path) -> None:
    flipped = tmp_path / "flipped.png"
    PILImage.open(IMAGE).convert("RGB").transpose(PILImage.Transpose.FLIP_TOP_BOTTOM).rotate(90).save(flipped)
    one = decoded_pixels(runner, render(nodes(folder)))
    other = decoded_pixels(runner, render(nodes(folder, flipped)))
    assert float(np.abs(one - other).mean()) > 5 * PNG_LEVEL


def test_an_8_channel_unet_without_an_image_latent_is_a_located_error(folder: Path, runner: Runner) -> None:
    graph = nodes(folder)
    graph["denoised"] = {**graph["denoised"], "positive": "!link positive", "negative": "!link negative"}
    with pytest.raises(SdflowError) as caught:
        decoded_pixels(runner, render(graph))
    message = str(caught.value)
    assert "'denoised'" in message and "reads 4 channels besides the latent's 4" in message
    assert "InstructPixToPixConditioning" in message


def test_the_comfyui_node_imports_with_its_three_outputs(tmp_path: Path) -> None:
    document = json.loads((Path(__file__).parent / "fixtures" / "comfy" / "img2img_api.json").read_text())
    loader = next(k for k, v in document.items() if v["class_type"] == "LoadImage")
    sampler = next(k for k, v in document.items() if v["class_type"] == "KSampler")
    vae = next(k for k, v in document.items() if v["class_type"] == "VAEEncode")
    inputs = document[sampler]["inputs"]
    document["90"] = {
        "class_type": "InstructPixToPixConditioning",
        "inputs": {
            "positive": inputs["positive"],
            "negative": inputs["negative"],
            "vae": document[vae]["inputs"]["vae"],
            "pixels": [loader, 0],
        },
    }
    inputs.update(positive=["90", 0], negative=["90", 1], latent_image=["90", 2])
    path = tmp_path / "ip2p.json"
    path.write_text(json.dumps(document))
    workflow = convert(read(path), str(path)).workflow
    sample = next(spec for spec in workflow.nodes.values() if spec.type == "DenoiseLoop")
    assert sample.fields["positive"] == Link("ip2p_90", "positive")
    assert sample.fields["negative"] == Link("ip2p_90", "negative")
    noise = next(spec for spec in workflow.nodes.values() if spec.type == "AddNoise")
    assert noise.fields["latent"] == Link("ip2p_90", "latent")
