"""CLIP vision and IP-Adapter: loading every layout, and graphs equal to diffusers' pipelines with
``load_ip_adapter`` (plain and plus, SD 1.x and SDXL) on the tiny random files of
tools/make_tiny_ip_adapters.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from workflows import max_diff, picture_graph, picture_pipeline_call

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.models import clip_vision
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PNG_LEVEL = 1 / 255


INPUTS = {"adapter": "unset", "adapter_b": "unset", "encoder": "unset", "picture": "unset"}
WINDOW = {"weight": 1.0, "start": 0.0, "end": 1.0}
ADAPTER = """
  picture: {type: LoadImage, path: !input picture}
  vision: {type: LoadCLIPVision, file: !input encoder}
  ipa: {type: LoadIPAdapter, file: !input adapter, allow_pickle: true}
  patched: {type: ApplyIPAdapter, model: !link ckpt.model, ip_adapter: !link ipa, clip_vision: !link vision,
            image: !link picture.image, weight: !input weight, start_percent: !input start,
            end_percent: !input end}
"""
SECOND = """
  ipa_b: {type: LoadIPAdapter, file: !input adapter_b}
  patched_b: {type: ApplyIPAdapter, model: !link patched, ip_adapter: !link ipa_b, clip_vision: !link vision,
              image: !link picture.image, weight: 0.7}
"""


def workflow(checkpoint: str = "builtin:tiny-sd15", adapter: bool = True, chained: bool = False) -> str:
    nodes = (ADAPTER if adapter else "") + (SECOND if chained else "")
    model = "patched_b" if chained else "patched" if adapter else "ckpt.model"
    return picture_graph(checkpoint, {**INPUTS, **WINDOW}, nodes, model, "positive")


@pytest.fixture(scope="module")
def files(vision_files) -> dict[str, Path]:
    return vision_files


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def pixels(runner: Runner, text: str, **inputs: Any) -> np.ndarray:
    result = runner.run(loads(text, "ip_adapter.yaml"), inputs=inputs, outputs=["decoded"])
    return result["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


def adapter_inputs(files: dict[str, Path], name: str, **more: Any) -> dict[str, Any]:
    return {
        "adapter": str(files[name]),
        "encoder": str(files["encoder"]),
        "picture": str(files["picture"]),
        **more,
    }


def reference(files: dict[str, Path], checkpoint: str, names: list[str], scales: list[float]) -> np.ndarray:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if checkpoint == "tiny-sd15":
        pipe = StableDiffusionPipeline.from_pretrained(str(BUILTIN / checkpoint), safety_checker=None)
    else:
        pipe = StableDiffusionXLPipeline.from_pretrained(str(BUILTIN / checkpoint))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.load_ip_adapter(
        str(files["root"]),
        subfolder="models",
        weight_name=[files[n].name for n in names],
        image_encoder_folder="image_encoder",
    )
    pipe.set_ip_adapter_scale(scales)
    image = PILImage.open(files["picture"]).convert("RGB")
    return picture_pipeline_call(pipe, ip_adapter_image=[image] * len(names))


# -- loading -------------------------------------------------------------------------------------


def test_a_single_clip_vision_file_loads_to_the_folders_model(files) -> None:
    cpu = torch.device("cpu")
    single, preprocess = clip_vision.load(files["encoder_file"], cpu, torch.float32)
    folder, folder_preprocess = clip_vision.load(files["encoder"], cpu, torch.float32)
    fields = [*clip_vision.config_from(single.state_dict()), "layer_norm_eps"]
    assert {f: getattr(single.config, f) for f in fields} == {f: getattr(folder.config, f) for f in fields}
    ours, theirs = single.state_dict(), folder.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert preprocess == folder_preprocess


def test_preprocessing_matches_clip_image_processor(files) -> None:
    from transformers import CLIPImageProcessor

    picture = PILImage.open(ROOT / "examples" / "inputs" / "shapes.png").convert("RGB").resize((80, 48))
    theirs = CLIPImageProcessor(size=32, crop_size=32)(images=picture, return_tensors="pt").pixel_values
    pixels = torch.from_numpy(np.array(picture)).permute(2, 0, 1)[None].float() / 255
    ours = clip_vision.Preprocess(32, 32)(pixels)
    assert ours.shape == theirs.shape == (1, 3, 32, 32)
    assert float((ours - theirs).abs().mean()) < 0.03  # PIL's and torch's bicubic differ a little


def test_clip_vision_encode_gives_the_models_outputs(files, runner: Runner) -> None:
    text = f"""
version: 1
nodes:
  picture: {{type: LoadImage, path: "{files["picture"]}"}}
  vision: {{type: LoadCLIPVision, file: "{files["encoder_file"]}"}}
  encoded: {{type: CLIPVisionEncode, clip_vision: !link vision, image: !link picture.image}}
"""
    out = runner.run(loads(text, "encode.yaml"), outputs=["encoded"])["encoded.clip_vision_output"]
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection.from_pretrained(str(files["encoder"])).eval()
    inputs = CLIPImageProcessor(size=32, crop_size=32)(
        images=PILImage.open(files["picture"]).convert("RGB"), return_tensors="pt"
    ).pixel_values
    with torch.no_grad():
        theirs = model(inputs, output_hidden_states=True)
    assert torch.allclose(out.image_embeds, theirs.image_embeds, atol=1e-5)
    assert torch.allclose(out.penultimate, theirs.hidden_states[-2], atol=1e-5)
    assert torch.allclose(out.last_hidden_state, theirs.last_hidden_state, atol=1e-5)


def test_a_pickled_ip_adapter_is_refused_without_the_opt_in(files, runner: Runner) -> None:
    text = workflow().replace("allow_pickle: true", "allow_pickle: false")
    with pytest.raises(UserError) as caught:
        runner.run(loads(text, "ip.yaml"), inputs=adapter_inputs(files, "sd15-plus-bin"))
    assert "pickle" in str(caught.value) and "ipa" in str(caught.value)


# -- against diffusers ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "plus"])
def test_sd15_matches_the_pipeline_with_load_ip_adapter(files, runner: Runner, kind: str) -> None:
    name = f"sd15-{kind}"
    theirs = reference(files, "tiny-sd15", [name], [0.8])
    ours = pixels(runner, workflow(), **adapter_inputs(files, name, weight=0.8))
    assert max_diff(ours, theirs) <= PNG_LEVEL
    plain = pixels(runner, workflow(adapter=False))
    assert max_diff(ours, plain) > 0.02  # the adapter matters
    other = pixels(runner, workflow(), **adapter_inputs(files, name, weight=0.8, picture=str(files["other"])))
    assert max_diff(ours, other) > 0.01  # and so does the picture


@pytest.mark.parametrize("kind", ["plain", "plus"])
def test_sdxl_matches_the_pipeline_with_load_ip_adapter(files, runner: Runner, kind: str) -> None:
    name = f"sdxl-{kind}"
    theirs = reference(files, "tiny-sdxl", [name], [1.0])
    ours = pixels(runner, workflow("builtin:tiny-sdxl"), **adapter_inputs(files, name))
    assert max_diff(ours, theirs) <= PNG_LEVEL
    assert max_diff(ours, pixels(runner, workflow("builtin:tiny-sdxl", adapter=False))) > 0.02


def test_two_chained_adapters_match_two_loaded_adapters(files, runner: Runner) -> None:
    theirs = reference(files, "tiny-sd15", ["sd15-plain", "sd15-plus"], [1.0, 0.7])
    inputs = adapter_inputs(files, "sd15-plain", adapter_b=str(files["sd15-plus"]))
    ours = pixels(runner, workflow(chained=True), **inputs)
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_the_pickled_adapter_draws_what_its_safetensors_copy_draws(files, runner: Runner) -> None:
    bin_ = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plus-bin"))
    safe = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plus"))
    assert np.array_equal(bin_, safe)


def test_weight_zero_and_an_empty_window_draw_the_unpatched_picture(files, runner: Runner) -> None:
    plain = pixels(runner, workflow(adapter=False))
    zero = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plain", weight=0.0))
    assert np.array_equal(zero, plain)
    empty = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plain", start=0.9, end=0.9))
    assert np.array_equal(empty, plain)


def test_the_window_limits_the_steps_the_adapter_acts_on(files, runner: Runner) -> None:
    whole = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plain"))
    late = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plain", start=0.5))
    plain = pixels(runner, workflow(adapter=False))
    assert max_diff(late, whole) > 0.005 and max_diff(late, plain) > 0.005


def test_an_adapter_of_another_family_is_a_located_error(files, runner: Runner) -> None:
    with pytest.raises(UserError) as caught:
        runner.run(loads(workflow(), "ip.yaml"), inputs=adapter_inputs(files, "sdxl-plain"))
    message = str(caught.value)
    assert "patched" in message and "ip_adapter" in message and "cross-attention width 80" in message


def test_sdflow_models_lists_clip_vision_and_ipadapter_files(files, model_folders, capsys) -> None:
    from sdflow.cli.main import main

    model_folders("ComfyUI/models/clip_vision/vit-tiny.safetensors", files["encoder_file"])
    model_folders("ComfyUI/models/ipadapter/ip-tiny-plus.safetensors", files["sd15-plus"])
    assert main(["models", "clip_vision"]) == 0
    assert "vit-tiny.safetensors  CLIP vision, 64 wide, 3 layers" in capsys.readouterr().out
    assert main(["models", "ipadapter"]) == 0
    assert (
        "ip-tiny-plus.safetensors  IP-Adapter plus, 6 tokens, cross-attention 32" in capsys.readouterr().out
    )


def test_files_are_found_by_name_in_the_model_folders(files, model_folders, runner: Runner) -> None:
    model_folders("ComfyUI/models/clip_vision/vit-tiny.safetensors", files["encoder_file"])
    model_folders("ComfyUI/models/ipadapter/ip-tiny.safetensors", files["sd15-plain"])
    by_name = pixels(
        runner, workflow(), **adapter_inputs(files, "sd15-plain", adapter="ip-tiny", encoder="vit-tiny")
    )
    by_path = pixels(runner, workflow(), **adapter_inputs(files, "sd15-plain"))
    assert np.array_equal(by_name, by_path)
