"""ControlNets and T2I-Adapters: loading every layout, and graphs equal to diffusers' control pipelines
(txt2img, img2img, inpaint, multi-ControlNet, SDXL, T2I-Adapter) on tiny random controls whose
zero-convs are random, so the control changes the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionAdapterPipeline,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetPipeline,
    T2IAdapter,
)
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from PIL import Image as PILImage
from safetensors.torch import load_file

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.models import controlnet
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PICTURE = ROOT / "examples" / "inputs" / "shapes.png"
MASK = ROOT / "examples" / "inputs" / "shapes_mask.png"
PNG_LEVEL = 1 / 255
PROMPT = "a red circle on a blue background"
NEGATIVE = "blurry"
STEPS = 6
CFG = 5.0
SEED = 3


def head(checkpoint: str = "builtin:tiny-sd15") -> str:
    return f"""
version: 1
inputs:
  seed: {SEED}
  strength: 1.0
  start: 0.0
  end: 1.0
  control: "unset"
  control_b: "unset"
  config: ""
nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: "{checkpoint}"}}
  positive: {{type: CLIPEncode, clip: !link ckpt.clip, text: "{PROMPT}"}}
  negative: {{type: CLIPEncode, clip: !link ckpt.clip, text: "{NEGATIVE}"}}
  schedule: {{type: Scheduler, model: !link ckpt.model, sampler: ddim, steps: {STEPS}}}
  picture: {{type: LoadImage, path: "{PICTURE}"}}
  edges: {{type: Canny, image: !link picture.image, low: 50, high: 150}}
"""


CONTROL = """
  cn: {type: LoadControlNet, file: !input control, config: !input config}
  controlled: {type: ApplyControlNet, positive: !link positive, negative: !link negative,
               control_net: !link cn, image: !link edges, strength: !input strength,
               start_percent: !input start, end_percent: !input end}
"""
SECOND_CONTROL = """
  cn_b: {type: LoadControlNet, file: !input control_b}
  controlled_b: {type: ApplyControlNet, positive: !link controlled.positive,
                 negative: !link controlled.negative, control_net: !link cn_b, image: !link edges}
"""
TXT2IMG = """
  empty: {type: EmptyLatent, width: 64, height: 64}
  noised: {type: AddNoise, latent: !link empty, schedule: !link schedule, seed: !input seed}
"""
IMG2IMG = """
  encoded: {type: VAEEncode, vae: !link ckpt.vae, image: !link picture.image, seed: !input seed}
  noised: {type: AddNoise, latent: !link encoded, schedule: !link schedule, seed: null, strength: 0.7}
"""
INPAINT = f"""
  mask: {{type: LoadMask, path: "{MASK}"}}
  encoded: {{type: VAEEncode, vae: !link ckpt.vae, image: !link picture.image, mask: !link mask,
            seed: !input seed}}
  noised: {{type: AddNoise, latent: !link encoded, schedule: !link schedule, seed: null}}
"""


def denoise(conditioning: str | None) -> str:
    positive = f"{conditioning}.positive" if conditioning else "positive"
    negative = f"{conditioning}.negative" if conditioning else "negative"
    return f"""
  denoised: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link {positive},
             negative: !link {negative}, latent: !link noised, cfg: {CFG}}}
  decoded: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised}}
"""


def workflow(latent: str = TXT2IMG, controls: int = 1, checkpoint: str = "builtin:tiny-sd15") -> str:
    parts = [head(checkpoint), latent]
    if controls >= 1:
        parts.append(CONTROL)
    if controls == 2:
        parts.append(SECOND_CONTROL)
    parts.append(denoise({0: None, 1: "controlled", 2: "controlled_b"}[controls]))
    return "".join(parts)


@pytest.fixture(scope="module")
def controls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """The tiny controls of tools/make_tiny_controlnets.py, written once for this module."""
    import importlib.util

    path = ROOT / "tools" / "make_tiny_controlnets.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_all(tmp_path_factory.mktemp("controls"))


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def run(runner: Runner, text: str, *outputs: str, **inputs: Any) -> dict[str, Any]:
    result = runner.run(loads(text, "controlnet.yaml"), inputs=inputs, outputs=list(outputs or ["decoded"]))
    return {name: result[name] for name in (f"{o}.image" for o in outputs or ["decoded"])}


def pixels(runner: Runner, text: str, **inputs: Any) -> np.ndarray:
    return run(runner, text, **inputs)["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


def edges(runner: Runner) -> torch.Tensor:
    """The Canny picture the workflows make, as the pipelines' control image (1, 3, h, w) in [0, 1]."""
    return run(runner, head() + TXT2IMG, "edges")["edges.image"].pixels


def picture() -> PILImage.Image:
    return PILImage.open(PICTURE).convert("RGB")


def call(pipe: Any, **kwargs: Any) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
        generator=torch.Generator().manual_seed(SEED),
        output_type="np",
        **kwargs,
    ).images


def sd15_pipe(cls: type, control: Any) -> Any:
    from diffusers import DDIMScheduler

    pipe = cls.from_pretrained(str(BUILTIN / "tiny-sd15"), controlnet=control, safety_checker=None)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    return pipe


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


# -- loading -------------------------------------------------------------------------------------


def test_an_ldm_single_file_loads_to_the_folders_weights(controls) -> None:
    folder, _ = controlnet.load(controls["sd15"]["folder"], torch.device("cpu"), torch.float32, False)
    single, found = controlnet.load(
        controls["sd15"]["ldm"], torch.device("cpu"), torch.float32, False, BUILTIN / "tiny-sd15"
    )
    assert (found.kind, found.layout, found.family.name) == ("controlnet", "ldm", "sd15")
    ours, theirs = single.state_dict(), folder.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_our_ldm_key_table_agrees_with_diffusers_converter(controls) -> None:
    config = dict(ControlNetModel.load_config(controls["sd15"]["folder"]))
    raw = load_file(str(controls["sd15"]["ldm"]))
    converted = convert_controlnet_checkpoint(raw, config)
    folder = load_file(str(controls["sd15"]["folder"] / "diffusion_pytorch_model.safetensors"))
    assert converted.keys() == folder.keys()
    assert all(torch.equal(converted[k], folder[k]) for k in folder)


def test_a_diffusers_layout_single_file_loads_to_the_folders_weights(controls) -> None:
    folder, _ = controlnet.load(controls["sdxl"]["folder"], torch.device("cpu"), torch.float32, False)
    single, found = controlnet.load(
        controls["sdxl"]["file"], torch.device("cpu"), torch.float32, False, BUILTIN / "tiny-sdxl"
    )
    assert (found.layout, found.family.name) == ("diffusers", "sdxl")
    assert all(torch.equal(single.state_dict()[k], v) for k, v in folder.state_dict().items())


@pytest.mark.parametrize(
    ("name", "kind", "label"),
    [
        ("sd15", "folder", "SD 1.x ControlNet"),
        ("sd15", "ldm", "SD 1.x ControlNet"),
        ("sdxl", "ldm", "SDXL ControlNet"),
        ("t2i", "file", "SD 1.x/2.x T2I-Adapter"),
        ("t2i", "folder", "SD 1.x/2.x T2I-Adapter"),
    ],
)
def test_the_family_and_kind_are_read_from_the_keys(controls, name: str, kind: str, label: str) -> None:
    assert controlnet.probe(controls[name][kind]).label() == label


def test_a_t2i_adapter_single_file_loads_to_the_folders_weights(controls) -> None:
    folder, _ = controlnet.load(controls["t2i"]["folder"], torch.device("cpu"), torch.float32, False)
    single, found = controlnet.load(controls["t2i"]["file"], torch.device("cpu"), torch.float32, False)
    assert isinstance(single, T2IAdapter) and found.kind == "t2i_adapter"
    assert all(torch.equal(single.state_dict()[k], v) for k, v in folder.state_dict().items())


def test_a_pickle_is_refused_without_allow_pickle(controls, tmp_path: Path, runner: Runner) -> None:
    pickled = tmp_path / "control_old.pth"
    torch.save(load_file(str(controls["sd15"]["ldm"])), pickled)
    with pytest.raises(UserError, match="pickle"):
        pixels(runner, workflow(), control=str(pickled), config="builtin:tiny-sd15")


def test_a_pickle_loads_with_allow_pickle_to_the_same_picture(
    controls, tmp_path: Path, runner: Runner
) -> None:
    pickled = tmp_path / "control_old.pth"
    torch.save(load_file(str(controls["sd15"]["ldm"])), pickled)
    text = workflow().replace("config: !input config}", "config: !input config, allow_pickle: true}")
    from_pickle = pixels(runner, text, control=str(pickled), config="builtin:tiny-sd15")
    assert np.array_equal(from_pickle, pixels(runner, workflow(), control=str(controls["sd15"]["folder"])))


def test_an_sd2_controlnet_is_told_by_its_cross_attention_width() -> None:
    shapes = {
        "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
    }
    assert controlnet.from_shapes(shapes, "control_sd21.safetensors").label() == "SD 2.x ControlNet"


def test_a_file_that_is_no_control_is_a_located_error(tmp_path: Path, runner: Runner) -> None:
    from safetensors.torch import save_file

    other = tmp_path / "not_a_control.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(UserError, match="neither a ControlNet") as caught:
        pixels(runner, workflow(), control=str(other))
    assert "'cn'" in str(caught.value) and "file" in str(caught.value)


def test_a_name_in_the_controlnet_model_folder_is_found(controls, model_folders, runner: Runner) -> None:
    model_folders("ComfyUI/models/controlnet/control_tiny.safetensors", controls["sd15"]["ldm"])
    by_name = pixels(runner, workflow(), control="control_tiny", config="builtin:tiny-sd15")
    by_path = pixels(runner, workflow(), control=str(controls["sd15"]["folder"]))
    assert max_diff(by_name, by_path) == 0


def test_sdflow_models_lists_controlnets_with_their_family(controls, model_folders, capsys) -> None:
    from sdflow.cli.main import main

    model_folders("ComfyUI/models/controlnet/control_tiny.safetensors", controls["sdxl"]["ldm"])
    assert main(["models", "controlnet"]) == 0
    assert "control_tiny.safetensors  SDXL ControlNet (ldm layout)" in capsys.readouterr().out


# -- drawing ---------------------------------------------------------------------------------------


def test_txt2img_matches_the_controlnet_pipeline(controls, runner: Runner) -> None:
    control = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    theirs = call(
        sd15_pipe(StableDiffusionControlNetPipeline, control), image=edges(runner), height=64, width=64
    )
    ours = pixels(runner, workflow(), control=str(controls["sd15"]["folder"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_the_control_changes_the_picture(controls, runner: Runner) -> None:
    controlled = pixels(runner, workflow(), control=str(controls["sd15"]["folder"]))
    plain = pixels(runner, workflow(controls=0))
    assert max_diff(controlled, plain) > 0.05


def test_strength_and_window_match_the_pipeline(controls, runner: Runner) -> None:
    control = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    pipe = sd15_pipe(StableDiffusionControlNetPipeline, control)
    theirs = call(
        pipe,
        image=edges(runner),
        height=64,
        width=64,
        controlnet_conditioning_scale=0.6,
        control_guidance_start=0.2,
        control_guidance_end=0.7,
    )
    ours = pixels(
        runner, workflow(), control=str(controls["sd15"]["folder"]), strength=0.6, start=0.2, end=0.7
    )
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_strength_zero_draws_exactly_what_no_control_draws(controls, runner: Runner) -> None:
    off = pixels(runner, workflow(), control=str(controls["sd15"]["folder"]), strength=0.0)
    assert np.array_equal(off, pixels(runner, workflow(controls=0)))


def test_img2img_matches_the_controlnet_img2img_pipeline(controls, runner: Runner) -> None:
    control = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    pipe = sd15_pipe(StableDiffusionControlNetImg2ImgPipeline, control)
    theirs = call(
        pipe,
        image=picture(),
        control_image=edges(runner),
        strength=0.7,
        height=64,
        width=64,
        controlnet_conditioning_scale=1.0,  # the img2img pipeline's default is 0.8
    )
    ours = pixels(runner, workflow(IMG2IMG), control=str(controls["sd15"]["folder"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_inpaint_matches_the_controlnet_inpaint_pipeline(controls, runner: Runner) -> None:
    control = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    pipe = sd15_pipe(StableDiffusionControlNetInpaintPipeline, control)
    theirs = call(
        pipe,
        image=picture(),
        mask_image=PILImage.open(MASK),
        control_image=edges(runner),
        strength=1.0,
        height=64,
        width=64,
        controlnet_conditioning_scale=1.0,  # the inpaint pipeline's default is 0.5
    )
    ours = pixels(runner, workflow(INPAINT), control=str(controls["sd15"]["folder"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_two_chained_controlnets_match_multi_controlnet(controls, runner: Runner) -> None:
    first = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    second = ControlNetModel.from_pretrained(controls["sd15-b"]["folder"])
    pipe = sd15_pipe(StableDiffusionControlNetPipeline, [first, second])
    image = edges(runner)
    theirs = call(pipe, image=[image, image], height=64, width=64)
    ours = pixels(
        runner,
        workflow(controls=2),
        control=str(controls["sd15"]["folder"]),
        control_b=str(controls["sd15-b"]["folder"]),
    )
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_a_control_picture_of_another_size_is_resized_as_diffusers_does(controls, runner: Runner) -> None:
    text = workflow().replace("image: !link edges,", "image: !link small,") + (
        "  small: {type: ImageScale, image: !link edges, width: 48, height: 40, resample: bilinear}\n"
    )
    found = run(runner, text, "decoded", "small", control=str(controls["sd15"]["folder"]))
    small = found["small.image"].pixels
    assert small.shape[-2:] == (40, 48)
    control = ControlNetModel.from_pretrained(controls["sd15"]["folder"])
    theirs = call(sd15_pipe(StableDiffusionControlNetPipeline, control), image=small, height=64, width=64)
    ours = found["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_a_hires_pass_resizes_the_control_to_its_size(controls, runner: Runner) -> None:
    hires = (
        workflow().replace("width: 64, height: 64}", "width: 32, height: 32}")
        + f"""
  upscaled: {{type: LatentUpscale, latent: !link denoised, width: 64, height: 64}}
  renoised: {{type: AddNoise, latent: !link upscaled, schedule: !link schedule, seed: 9, strength: 0.5}}
  second: {{type: DenoiseLoop, model: !link ckpt.model, positive: !link controlled.positive,
           negative: !link controlled.negative, latent: !link renoised, cfg: {CFG}}}
  final: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link second}}
"""
    )
    on = run(runner, hires, "final", control=str(controls["sd15"]["folder"]))["final.image"].pixels
    off = run(runner, hires, "final", control=str(controls["sd15"]["folder"]), strength=0.0)[
        "final.image"
    ].pixels
    assert on.shape == (1, 3, 64, 64)
    assert (on - off).abs().max() > 0.01


def test_sdxl_matches_the_sdxl_controlnet_pipeline(controls, runner: Runner) -> None:
    from diffusers import DDIMScheduler

    control = ControlNetModel.from_pretrained(controls["sdxl"]["folder"])
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(str(BUILTIN / "tiny-sdxl"), controlnet=control)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = call(pipe, image=edges(runner), height=64, width=64)
    ours = pixels(runner, workflow(checkpoint="builtin:tiny-sdxl"), control=str(controls["sdxl"]["folder"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL
    assert max_diff(ours, pixels(runner, workflow(controls=0, checkpoint="builtin:tiny-sdxl"))) > 0.01


def test_t2i_adapter_matches_the_adapter_pipeline(controls, runner: Runner) -> None:
    from diffusers import DDIMScheduler

    adapter = T2IAdapter.from_pretrained(controls["t2i"]["folder"])
    pipe = StableDiffusionAdapterPipeline.from_pretrained(
        str(BUILTIN / "tiny-sd15"), adapter=adapter, safety_checker=None
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    theirs = call(pipe, image=edges(runner), height=64, width=64, adapter_conditioning_scale=0.8)
    ours = pixels(runner, workflow(), control=str(controls["t2i"]["file"]), strength=0.8)
    assert max_diff(ours, theirs) <= PNG_LEVEL
    assert max_diff(ours, pixels(runner, workflow(controls=0))) > 0.01


def test_a_controlnet_of_another_family_is_a_located_error_before_anything_runs(
    controls, runner: Runner
) -> None:
    text = workflow()
    with pytest.raises(UserError) as caught:
        runner.run(loads(text, "controlnet.yaml"), inputs={"control": str(controls["sdxl"]["folder"])})
    message = str(caught.value)
    assert "controlled" in message and "control_net" in message and "SDXL" in message
    assert runner.run(loads(text, "controlnet.yaml"), inputs={"control": str(controls["sd15"]["folder"])})


# -- caching -------------------------------------------------------------------------------------


def ran(runner: Runner, text: str, **inputs: Any) -> set[str]:
    return set(runner.run(loads(text, "controlnet.yaml"), inputs=inputs, outputs=["decoded"]).report.ran())


def test_changing_only_the_strength_reruns_only_the_control_application_and_what_follows(controls) -> None:
    runner = Runner(device="cpu", dtype="fp32")
    folder = str(controls["sd15"]["folder"])
    ran(runner, workflow(), control=folder, strength=0.5)
    assert ran(runner, workflow(), control=folder, strength=0.9) == {"controlled", "denoised", "decoded"}


def test_a_seed_sweep_runs_the_preprocessing_once(controls) -> None:
    runner = Runner(device="cpu", dtype="fp32")
    folder = str(controls["sd15"]["folder"])
    first = ran(runner, workflow(), control=folder, seed=1)
    assert {"edges", "cn", "controlled"} <= first
    for seed in (2, 3):
        assert ran(runner, workflow(), control=folder, seed=seed) == {"noised", "denoised", "decoded"}


# -- the example and its metadata ------------------------------------------------------------------


def test_the_example_writes_a1111s_controlnet_unit_line(tmp_path: Path) -> None:
    from sdflow.graphs.loading import load

    runner = Runner(device="cpu", dtype="fp32")
    runner.run(
        load(ROOT / "examples" / "controlnet.yaml"), inputs={"strength": 0.7}, output_dir=str(tmp_path)
    )
    (saved,) = tmp_path.glob("*.png")
    text = PILImage.open(saved).text["parameters"]
    assert text.endswith(
        'ControlNet 0: "Module: none, Model: shapes-control, Weight: 0.7, Guidance Start: 0.0, '
        'Guidance End: 1.0"'
    )


def test_a_window_that_ends_before_it_starts_is_refused_before_anything_runs(
    controls, runner: Runner
) -> None:
    with pytest.raises(
        UserError, match=r"start_percent \(0.8\) must not exceed end_percent \(0.2\)"
    ) as caught:
        runner.run(
            loads(workflow(), "controlnet.yaml"),
            inputs={"control": str(controls["sd15"]["folder"]), "start": 0.8, "end": 0.2},
        )
    assert "'controlled'" in str(caught.value)


def test_a_batched_seed_sweep_with_a_control_equals_the_serial_runs(controls) -> None:
    folder = str(controls["sd15"]["folder"])
    items = [{"control": folder, "seed": seed} for seed in (1, 2, 3)]
    text = workflow()
    serial = [pixels(Runner(device="cpu", dtype="fp32"), text, **item) for item in items]
    batched = Runner(device="cpu", dtype="fp32").run_batch(
        loads(text, "controlnet.yaml"), items, 3, ["decoded"]
    )
    for one, result in zip(serial, batched, strict=True):
        assert np.array_equal(one, result["decoded.image"].pixels.permute(0, 2, 3, 1).numpy())
    assert max_diff(serial[0], serial[1]) > 0.01
