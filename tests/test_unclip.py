"""unCLIP and SDXL revision: an unCLIP checkpoint's graph equals diffusers' StableUnCLIPImg2ImgPipeline
on a tiny random unCLIP folder; revision follows ComfyUI's math (the pooled embedding replaced by the
picture's noised image embeds x strength) and changes the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from workflows import PICTURE_SEED, max_diff, picture_graph, picture_pipeline_call

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.runner import Runner

PNG_LEVEL = 1 / 255
NOISE_SEED = 11


INPUTS = {"picture": "unset", "encoder": "unset", "strength": 1.0, "augmentation": 0.0}


def workflow(
    checkpoint: str, vision: str = "ckpt.clip_vision", unclip: bool = True, zero_text: bool = False
) -> str:
    positive, nodes = "positive", ""
    if vision != "ckpt.clip_vision":
        nodes += "  vision: {type: LoadCLIPVision, file: !input encoder}\n"
    if zero_text:
        nodes += "  zeroed: {type: ConditioningZeroOut, conditioning: !link positive}\n"
        positive = "zeroed"
    if unclip:
        nodes += f"""
  picture: {{type: LoadImage, path: !input picture}}
  encoded: {{type: CLIPVisionEncode, clip_vision: !link {vision}, image: !link picture.image}}
  pictured: {{type: unCLIPConditioning, conditioning: !link {positive}, clip_vision_output: !link encoded,
             strength: !input strength, noise_augmentation: !input augmentation, seed: {NOISE_SEED}}}
"""
        positive = "pictured"
    return picture_graph(checkpoint, INPUTS, nodes, "ckpt.model", positive)


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def run(runner: Runner, text: str, node: str = "decoded", **inputs: Any) -> Any:
    return runner.run(loads(text, "unclip.yaml"), inputs=inputs, outputs=[node])


def pixels(runner: Runner, text: str, **inputs: Any) -> np.ndarray:
    return run(runner, text, **inputs)["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("augmentation", [0.0, 0.2])
def test_an_unclip_checkpoint_matches_the_stable_unclip_pipeline(vision_files, runner, augmentation) -> None:
    from diffusers import DDIMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.utils.torch_utils import randn_tensor

    folder = vision_files["unclip"]
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(folder))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    # the pipeline draws the embeds' noise from its generator before the latents: hand it our latents
    latents = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(PICTURE_SEED))
    theirs = picture_pipeline_call(
        pipe,
        NOISE_SEED,
        image=PILImage.open(vision_files["picture"]).convert("RGB"),
        noise_level=round(999 * augmentation),
        latents=latents,
    )
    text = workflow(str(folder))
    ours = pixels(runner, text, picture=str(vision_files["picture"]), augmentation=augmentation)
    assert max_diff(ours, theirs) <= PNG_LEVEL
    other = pixels(runner, text, picture=str(vision_files["other"]), augmentation=augmentation)
    assert max_diff(ours, other) > 0.01  # the picture matters


def test_an_unclip_model_without_a_picture_reads_zero_class_labels(vision_files, runner) -> None:
    folder = str(vision_files["unclip"])
    without = pixels(runner, workflow(folder, unclip=False))
    zero = pixels(runner, workflow(folder), picture=str(vision_files["picture"]), strength=0.0)
    assert np.array_equal(without, zero)


def test_clip_vision_of_a_checkpoint_without_one_is_a_located_error(vision_files, runner) -> None:
    with pytest.raises(UserError) as caught:
        run(runner, workflow("builtin:tiny-sd15"), picture=str(vision_files["picture"]))
    message = str(caught.value)
    assert "encoded" in message and "clip_vision" in message and "unCLIP" in message


def test_unclip_conditioning_on_a_model_that_reads_no_picture_is_a_located_error(
    vision_files, runner
) -> None:
    text = workflow("builtin:tiny-sd15", vision="vision")
    with pytest.raises(UserError) as caught:
        run(runner, text, picture=str(vision_files["picture"]), encoder=str(vision_files["encoder"]))
    message = str(caught.value)
    assert "denoised" in message and "unCLIP" in message and "SDXL" in message


# -- SDXL revision -------------------------------------------------------------------------------


def revision_inputs(vision_files: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"picture": str(vision_files["picture"]), "encoder": str(vision_files["encoder"]), **more}


def test_revision_replaces_the_pooled_embedding_as_comfyui_does(vision_files, runner) -> None:
    from diffusers import DDPMScheduler

    text = workflow("builtin:tiny-sdxl", vision="vision")
    inputs = revision_inputs(vision_files, strength=0.7, augmentation=0.3)
    result = run(runner, text, "pictured", **inputs)
    conditioning = result["pictured.conditioning"]
    embeds = run(runner, text, "encoded", **inputs)["encoded.clip_vision_output"].image_embeds
    # ComfyUI's sdxl_pooled: unclip_adm(...)[:, :1280] = strength x q_sample(embeds, level, noise)
    level = round(999 * 0.3)
    noise = torch.randn((1, embeds.shape[-1]), generator=torch.Generator().manual_seed(NOISE_SEED))
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    alpha = schedule.alphas_cumprod[level]
    expected = 0.7 * (alpha.sqrt() * embeds + (1 - alpha).sqrt() * noise)
    family = conditioning.family
    added = family.added_cond_kwargs([(conditioning, False)], 1, (64, 64), torch.device("cpu"), torch.float32)
    assert torch.allclose(added["text_embeds"], expected, atol=1e-5)
    assert not torch.allclose(added["text_embeds"], conditioning.pooled, atol=1e-3)


def test_revision_changes_the_picture_and_follows_the_picture(vision_files, runner) -> None:
    plain = pixels(runner, workflow("builtin:tiny-sdxl", unclip=False))
    text = workflow("builtin:tiny-sdxl", vision="vision", zero_text=True)
    revised = pixels(runner, text, **revision_inputs(vision_files))
    assert max_diff(revised, plain) > 0.01
    other = pixels(runner, text, **revision_inputs(vision_files, picture=str(vision_files["other"])))
    assert max_diff(revised, other) > 0.001


def test_an_unclip_unet_without_its_image_parts_is_a_located_error(vision_files, runner, tmp_path) -> None:
    import json
    import shutil

    folder = tmp_path / "no_encoder"
    shutil.copytree(vision_files["unclip"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["image_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserError) as caught:
        run(runner, workflow(str(folder), unclip=False))
    assert "denoised" in str(caught.value) and "class labels" in str(caught.value)
