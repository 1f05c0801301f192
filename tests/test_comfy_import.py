"""`sdflow import comfy`: ComfyUI workflows (API and UI format, and ComfyUI PNGs) to sdflow YAML."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from sdflow.cli import main
from sdflow.errors import UserError
from sdflow.formats.comfy_json import read
from sdflow.formats.infotext import parse_infotext
from sdflow.graphs.loading import load
from sdflow.graphs.model import InputRef, Link
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps, loads
from sdflow.interop.comfy import ConversionError, convert
from sdflow.interop.comfy.handlers_sampling import partial_schedule
from tests.workflows import comfy_api

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"
EXAMPLE_INPUTS = Path(__file__).resolve().parent.parent / "examples" / "inputs"
TINY_SD15 = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15"


def imported(name: str, image_dir: str | None = None):
    path = FIXTURES / name
    return convert(read(path), str(path), image_dir)


def fields(conversion, node_id: str) -> dict:
    spec = conversion.workflow.nodes[node_id]
    return {"type": spec.type, **spec.fields}


def sdflow_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("workflow", ["txt2img", "img2img", "lora", "two_pass"])
def test_the_api_and_ui_formats_of_one_workflow_import_the_same(workflow):
    """The UI file resolves its seed primitive, its reroute and its positional widget values."""
    api = imported(f"{workflow}_api.json").workflow
    ui = imported(f"{workflow}_ui.json").workflow
    assert api.structure() == ui.structure()


def test_txt2img_becomes_scheduler_addnoise_and_denoiseloop():
    conversion = imported("txt2img_api.json")
    assert list(conversion.workflow.nodes) == (
        [
            "checkpoint_4",
            "empty_5",
            "prompt_6",
            "prompt_7",
            "schedule_3",
            "noise_3",
            "sample_3",
            "decode_8",
            "save_9",
        ]
    )
    assert fields(conversion, "checkpoint_4") == {
        "type": "LoadCheckpoint",
        "checkpoint": "v1-5-pruned-emaonly.safetensors",  # resolved through the model folders when it runs
    }
    assert fields(conversion, "schedule_3") == {
        "type": "Scheduler", "model": Link("checkpoint_4", "model"), "sampler": "euler", "sigmas": "normal",
        "mode": "comfy", "steps": 20,
    }  # fmt: skip
    assert fields(conversion, "noise_3") == {
        "type": "AddNoise",
        "latent": Link("empty_5", "latent"),
        "schedule": Link("schedule_3"),
        "seed": InputRef("seed"),
    }
    # the values people change most become workflow inputs, for --set
    assert {n: (i.type, i.default) for n, i in conversion.workflow.inputs.items()} == {
        "seed": ("int", 42),
        "prompt": ("str", "a red circle on a blue background"),
        "negative": ("str", "text, watermark"),
    }
    assert fields(conversion, "prompt_7")["text"] == InputRef("negative")
    assert fields(conversion, "sample_3")["cfg"] == 8.0
    assert fields(conversion, "sample_3")["negative"] == Link("prompt_7", "conditioning")
    assert fields(conversion, "save_9")["filename_prefix"] == "ComfyUI"
    assert conversion.notes == []


def test_img2img_keeps_comfyuis_step_count_at_partial_denoise():
    conversion = imported("img2img_api.json")
    schedule, noise = fields(conversion, "schedule_12"), fields(conversion, "noise_12")
    assert (schedule["sampler"], schedule["sigmas"]) == ("dpmpp_2m", "karras")
    assert schedule["steps"] == int(20 / 0.6)  # ComfyUI: int(steps / denoise), of which the last 20 run
    assert int(schedule["steps"] * noise["strength"]) == 20  # sdflow runs int(steps * strength)
    assert noise["latent"] == Link("encode_11", "latent")
    assert fields(conversion, "encode_11")["posterior"] == "mode"  # ComfyUI's VAEEncode is deterministic
    assert fields(conversion, "image_10")["path"] == "red_circle.png"


@pytest.mark.parametrize(
    ("steps", "denoise"), [(20, 0.6), (14, 0.5), (3, 0.35), (30, 0.99), (1, 0.1), (25, 0.75)]
)
def test_partial_schedules_run_exactly_the_steps_comfyui_runs(steps, denoise):
    total, strength = partial_schedule(steps, denoise)
    assert total == int(steps / denoise)
    assert int(total * strength) == steps


def test_inpainting_with_vae_encode_for_inpaint_puts_the_mask_on_the_encoder():
    conversion = imported("inpaint_ui.json")
    assert fields(conversion, "encode_5") == {
        "type": "VAEEncode",
        "vae": Link("checkpoint_1", "vae"),
        "image": Link("image_4", "image"),
        "mask": Link("image_4", "mask"),  # the picture's transparency, 1 = repaint, as in ComfyUI
        "posterior": "mode",
    }
    assert fields(conversion, "schedule_6")["sampler"] == "unipc"
    assert conversion.notes == ["node 9 (PreviewImage) is muted in ComfyUI: left out"]


def test_set_latent_noise_mask_folds_into_the_vae_encode_it_masks():
    conversion = imported("inpaint_api.json")
    assert "encode_6" not in conversion.workflow.nodes  # superseded, used by nothing else
    assert fields(conversion, "masked_7")["mask"] == Link("image_5", "mask")
    assert fields(conversion, "noise_8")["latent"] == Link("masked_7", "latent")


def test_hires_fix_upscales_the_latent_and_samples_again():
    conversion = imported("hires_fix_api.json")
    assert fields(conversion, "upscale_10") == {
        "type": "LatentUpscaleBy", "latent": Link("sample_3", "latent"),
        "scale_by": 2.0, "upscale_method": "bilinear",
    }  # fmt: skip
    assert fields(conversion, "schedule_11")["steps"] == 6
    assert fields(conversion, "noise_11")["strength"] == 0.5
    assert fields(conversion, "noise_11")["seed"] == InputRef("seed_11")  # one seed input per sampler
    assert conversion.workflow.inputs["seed_11"].default == 43
    assert "prompt" not in conversion.workflow.inputs  # two samplers: the prompts stay in their nodes
    assert fields(conversion, "scale_13")["resample"] == "lanczos"
    ui = imported("hires_fix_ui.json")
    assert fields(ui, "upscale_10")["mode"] == "nearest"  # nearest-exact
    assert (fields(ui, "upscale_10")["width"], fields(ui, "upscale_10")["height"]) == (1024, 1024)


def test_lora_clip_skip_and_vae_loader():
    conversion = imported("lora_ui.json")
    assert fields(conversion, "lora_2") == {
        "type": "LoadLoRA",
        "model": Link("checkpoint_1", "model"),
        "clip": Link("checkpoint_1", "clip"),
        "file": "pixel-art.safetensors",
        "strength_model": 0.8,
        "strength_clip": 0.6,
    }
    for prompt in ("prompt_4", "prompt_5"):  # CLIPSetLastLayer -2 on the LoRA's clip
        assert fields(conversion, prompt)["clip"] == Link("lora_2", "clip")
        assert fields(conversion, prompt)["clip_skip"] == 1
    assert fields(conversion, "vae_6") == {
        "type": "LoadVAE",
        "file": "vae-ft-mse-840000-ema-pruned.safetensors",
    }
    assert fields(conversion, "decode_9")["vae"] == Link("vae_6", "vae")
    assert fields(conversion, "schedule_8") == {
        "type": "Scheduler", "model": Link("lora_2", "model"), "sampler": "heun", "sigmas": "normal",
        "mode": "comfy", "steps": 30,
    }  # fmt: skip
    assert fields(conversion, "empty_7")["batch_size"] == 2
    text = dumps(conversion.workflow)
    assert "type: LoadLoRA\n    model: !link checkpoint_1.model\n    clip: !link checkpoint_1.clip\n" in text
    assert "&id" not in text  # a link used twice is written twice, not as a YAML alias


def _api_with(changes: dict[str, dict]) -> dict:
    return comfy_api(changes)


def test_unknown_samplers_and_schedulers_name_the_choices_all_at_once(tmp_path):
    document = _api_with({"3": {"sampler_name": "dpmpp_2s_ancestral", "scheduler": "normal"}})
    document["10"] = json.loads(json.dumps(document["3"]))
    document["10"]["inputs"].update(sampler_name="euler_ancestral", scheduler="karras")  # comfy mode runs it
    document["11"] = json.loads(json.dumps(document["3"]))
    document["11"]["inputs"].update(sampler_name="euler", scheduler="align_your_steps")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConversionError) as caught:
        convert(read(path), str(path))
    message = str(caught.value)
    assert (
        "node 3 (KSampler): unknown sampler_name 'dpmpp_2s_ancestral' (sdflow maps: euler, euler_ancestral"
        in message
    )
    assert "node 10" not in message  # every ComfyUI sampler without Karras sigmas in diffusers has comfy mode
    assert (
        "node 11 (KSampler): unknown scheduler 'align_your_steps' (sdflow maps: "
        "normal, karras, exponential, sgm_uniform, simple, "
        "ddim_uniform, beta, linear_quadratic, kl_optimal)" in message
    )


@pytest.mark.parametrize(
    ("comfy", "ours"),
    [
        ("euler", "euler"),
        ("heun", "heun"),
        ("lms", "lms"),
        ("dpmpp_2m", "dpmpp_2m"),
        ("uni_pc", "unipc"),
        ("deis", "deis"),
    ],
)
def test_the_karras_scheduler_maps_to_karras_sigmas_for_every_sampler_that_has_them(tmp_path, comfy, ours):
    """karras and normal become the Scheduler's sigmas in comfy mode (ComfyUI's tables); deis, which
    comfy mode lacks, runs in diffusers mode: normal is its own spacing there."""
    path = tmp_path / "karras.json"
    path.write_text(json.dumps(_api_with({"3": {"sampler_name": comfy, "scheduler": "karras"}})))
    schedule = fields(convert(read(path), str(path)), "schedule_3")
    assert (schedule["sampler"], schedule["sigmas"]) == (ours, "karras")
    path.write_text(json.dumps(_api_with({"3": {"sampler_name": comfy, "scheduler": "normal"}})))
    schedule = fields(convert(read(path), str(path)), "schedule_3")
    if comfy == "deis":
        assert "sigmas" not in schedule and "mode" not in schedule
    else:
        assert (schedule["sigmas"], schedule["mode"]) == ("normal", "comfy")


def test_two_ksampler_advanced_passes_become_a_stopped_loop_and_a_resumed_one():
    conversion = imported("two_pass_api.json")
    assert fields(conversion, "sample_5")["end_at"] == 12
    assert fields(conversion, "noise_6") == {
        "type": "AddNoise",
        "latent": Link("sample_5", "latent"),
        "schedule": Link("schedule_6"),
        "seed": InputRef("seed_6"),  # drives ancestral samplers only: nothing is added
        "start_at": 12,
    }
    assert "end_at" not in fields(conversion, "sample_6")
    for schedule in ("schedule_5", "schedule_6"):
        assert (
            fields(conversion, schedule)["steps"] == 20 and fields(conversion, schedule)["sigmas"] == "karras"
        )
    assert fields(conversion, "decode_7")["latent"] == Link("sample_6", "latent")


def _tiny_two_pass(tmp_path: Path, split: bool = True) -> Path:
    document = json.loads((FIXTURES / "two_pass_api.json").read_text())
    document["1"]["inputs"]["ckpt_name"] = "builtin:tiny-sd15"
    document["4"]["inputs"].update(width=64, height=64)
    document["5"]["inputs"].update(steps=4, end_at_step=2)
    document["6"]["inputs"].update(steps=4, start_at_step=2)
    if not split:  # the same run in one pass
        document["5"]["inputs"].update(end_at_step=10000, return_with_leftover_noise="disable")
        document["7"]["inputs"]["samples"] = ["5", 0]
        del document["6"]
    path = tmp_path / ("two_pass.json" if split else "one_pass.json")
    path.write_text(json.dumps(document))
    return path


def test_an_imported_two_pass_split_equals_the_one_pass_run_bit_for_bit(tmp_path, runner):
    two = runner.run(convert(read(path := _tiny_two_pass(tmp_path)), str(path)).workflow)
    one = runner.run(convert(read(path := _tiny_two_pass(tmp_path, split=False)), str(path)).workflow)
    assert two["sample_5"].cut.index == 2 and not two["sample_5"].cut.clean
    assert not torch.equal(two["sample_5"].samples, one["sample_5"].samples)
    assert torch.equal(two["sample_6"].samples, one["sample_5"].samples)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"5": {"add_noise": "disable"}},
            "node 5 (KSamplerAdvanced): add_noise 'disable' is supported only on the latent of a "
            "KSamplerAdvanced that returns with leftover noise",
        ),
        (
            {"5": {"return_with_leftover_noise": "disable"}},
            "node 5 (KSamplerAdvanced): end_at_step 12 < steps 20 with return_with_leftover_noise 'disable'",
        ),
        (
            {"6": {"add_noise": "enable"}},
            "node 6 (KSamplerAdvanced): add_noise 'enable' on a latent returned with leftover noise",
        ),
        (
            {"6": {"end_at_step": 12}},
            "node 6 (KSamplerAdvanced): end_at_step 12 must be above start_at_step 12",
        ),
    ],
)
def test_splits_sdflow_cannot_reproduce_are_refused(tmp_path, changes, expected):
    document = json.loads((FIXTURES / "two_pass_api.json").read_text())
    for node_id, inputs in changes.items():
        document[node_id]["inputs"].update(inputs)
    path = tmp_path / "split.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConversionError, match=re.escape(expected)):
        convert(read(path), str(path))


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"nodes": "x"}, "not a ComfyUI workflow"),
        ([1, 2], "not a ComfyUI workflow"),
        (
            {"1": {"class_type": "KSampler", "inputs": {"model": ["9", 0]}}},
            "links come from nodes the workflow lacks: 9",
        ),
    ],
)
def test_malformed_workflows_are_user_errors(tmp_path, document, expected):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UserError, match=expected):
        convert(read(path), str(path))


def test_a_comfyui_png_imports_its_api_prompt(tmp_path, capsys):
    info = PngInfo()
    info.add_text("prompt", (FIXTURES / "hires_fix_api.json").read_text())
    info.add_text("workflow", (FIXTURES / "hires_fix_ui.json").read_text())
    picture = tmp_path / "ComfyUI_00001_.png"
    PILImage.new("RGB", (8, 8)).save(picture, pnginfo=info)
    code, out, err = sdflow_cli(
        "import", "comfy", str(picture), "-o", str(tmp_path / "w.yaml"), capsys=capsys
    )
    assert code == 0, err
    workflow = load(out.strip())
    assert workflow.nodes["upscale_10"].fields["scale_by"] == 2.0  # the API prompt, not the UI graph
    assert (
        (tmp_path / "w.yaml")
        .read_text()
        .startswith("# Imported by `sdflow import comfy` from the ComfyUI api")
    )


def _shapes_txt2img(tmp_path: Path, seed: int = 42) -> Path:
    document = _api_with(
        {
            "4": {"ckpt_name": "builtin:shapes"},
            "5": {"width": 64, "height": 64, "batch_size": 2},
            "3": {"steps": 2, "cfg": 4.0, "sampler_name": "ddim", "seed": seed},
        }
    )
    path = tmp_path / "shapes_api.json"
    path.write_text(json.dumps(document))
    return path


def test_an_imported_workflow_runs_and_starts_from_comfyuis_noise(tmp_path, runner):
    path = _shapes_txt2img(tmp_path, seed=1234)
    workflow = convert(read(path), str(path)).workflow
    result = runner.run(workflow)
    assert len(result.files) == 2
    drawn = result["noise_3"].noise.noise
    with torch.random.fork_rng(devices=[]):  # ComfyUI's comfy.sample.prepare_noise, for the whole batch
        generator = torch.manual_seed(1234)
        latent = torch.zeros(2, 4, 8, 8)
        expected = torch.randn(
            latent.size(), dtype=torch.float32, layout=latent.layout, generator=generator, device="cpu"
        )
    assert torch.equal(drawn.cpu(), expected)


def test_the_command_writes_a_new_file_that_runs(tmp_path, capsys):
    source = _shapes_txt2img(tmp_path)
    target = tmp_path / "flows" / "imported.yaml"
    code, out, _ = sdflow_cli("import", "comfy", str(source), "-o", str(target), capsys=capsys)
    assert code == 0 and out.strip() == str(target)
    code, again, _ = sdflow_cli("import", "comfy", str(source), "-o", str(target), capsys=capsys)
    assert code == 0 and again.strip() != str(target)  # never overwritten
    code, out, err = sdflow_cli(
        "run",
        str(target),
        "--quiet",
        "--output-dir",
        str(tmp_path / "out"),
        "--sweep",
        "seed=1,2",
        capsys=capsys,
    )
    assert code == 0, err
    assert len(out.split()) == 4  # two seeds, a batch of two each


def test_image_dir_paths_are_written_relative_to_the_yaml(tmp_path, capsys, monkeypatch):
    images = tmp_path / "comfy" / "input"  # ComfyUI's input folder
    images.mkdir(parents=True)
    picture = PILImage.open(EXAMPLE_INPUTS / "red_circle.png").convert("RGBA")
    picture.save(images / "red_circle.png")
    holed = picture.copy()
    holed.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = repaint, as ComfyUI's mask editor leaves it
    holed.save(images / "red_circle_holed.png")
    monkeypatch.chdir(tmp_path)
    code, _, err = sdflow_cli(
        "import", "comfy", str(FIXTURES / "inpaint_api.json"), "-o", "flows/inpaint.yaml",
        "--image-dir", "comfy/input", capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    workflow = load(tmp_path / "flows" / "inpaint.yaml")
    assert workflow.nodes["image_5"].fields["path"] == "../comfy/input/red_circle_holed.png"
    monkeypatch.chdir(images)  # paths follow the YAML file, wherever it is run from
    code, out, err = sdflow_cli(
        "run", str(tmp_path / "flows" / "inpaint.yaml"), "--quiet", "--output-dir", str(tmp_path / "out"),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    with PILImage.open(out.split()[0]) as result:
        assert result.size == (64, 64)


def test_a_lora_workflow_finds_its_lora_and_vae_in_comfyuis_model_folders(
    tmp_path, tool, model_folders, runner
):
    """The names ComfyUI wrote (lora_name, vae_name) are kept; LoadLoRA / LoadVAE find them."""
    from diffusers import StableDiffusionPipeline

    loaded = StableDiffusionPipeline.from_pretrained(str(TINY_SD15))
    made = tmp_path / "made"
    made.mkdir()
    lora = tool("make_tiny_loras.py").write_kohya(
        made / "l.safetensors", loaded.unet, loaded.text_encoder, 4, 0
    )
    vae = tool("make_tiny_vaes.py").write_all(made / "vae")["ldm"]
    model_folders("ComfyUI/models/loras/pixel-art.safetensors", lora)
    model_folders("ComfyUI/models/vae/vae-ft-mse-840000-ema-pruned.safetensors", vae)
    document = json.loads((FIXTURES / "lora_api.json").read_text())
    document["1"]["inputs"]["ckpt_name"] = "builtin:tiny-sd15"
    document["7"]["inputs"].update(width=64, height=64, batch_size=1)
    document["8"]["inputs"]["steps"] = 2
    path = tmp_path / "lora_api.json"
    path.write_text(json.dumps(document))
    workflow = convert(read(path), str(path)).workflow
    with_lora = np.asarray(runner.run(workflow).image("decode_9"))
    workflow.nodes["lora_2"].fields.update(strength_model=0.0, strength_clip=0.0)
    without = np.asarray(runner.run(workflow).image("decode_9"))
    assert with_lora.shape == (64, 64, 3)
    assert not np.array_equal(with_lora, without)


def test_lora_workflows_validate(tmp_path, capsys):
    code, _, err = sdflow_cli(
        "import", "comfy", str(FIXTURES / "lora_api.json"), "-o", str(tmp_path / "lora.yaml"), capsys=capsys
    )
    assert code == 0, err


def test_values_sdflow_refuses_are_reported_before_anything_is_written(tmp_path, capsys):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(_api_with({"3": {"cfg": 150.0}, "5": {"width": "wide"}})))
    code, _, err = sdflow_cli("import", "comfy", str(path), "-o", str(tmp_path / "w.yaml"), capsys=capsys)
    assert code == 2
    assert "node 5 (EmptyLatentImage): input 'width' must be a number, got 'wide'" in err
    path.write_text(json.dumps(_api_with({"3": {"cfg": 150.0}})))
    code, _, err = sdflow_cli("import", "comfy", str(path), "-o", str(tmp_path / "w.yaml"), capsys=capsys)
    assert code == 2
    assert "the converted workflow does not validate (nothing written)" in err
    assert "node 'sample_3', field 'cfg'" in err
    assert not (tmp_path / "w.yaml").exists()


def test_subgraphs_are_named_and_the_api_format_suggested(tmp_path):
    document = json.loads((FIXTURES / "txt2img_ui.json").read_text())
    uuid = "8a1e8d3e-7a1c-4a55-9d4c-1f2a3b4c5d6e"
    document["nodes"].append({"id": 20, "type": uuid, "mode": 0, "inputs": [], "outputs": []})
    document["definitions"] = {"subgraphs": [{"id": uuid, "name": "Face detailer", "nodes": []}]}
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConversionError) as caught:
        convert(read(path), str(path))
    assert "unsupported ComfyUI node subgraph 'Face detailer' (node 20)" in str(caught.value)
    assert "export the API format, where ComfyUI flattens them" in str(caught.value)


@pytest.mark.parametrize(
    "document",
    [
        {
            "nodes": [{"id": 1, "type": "VAEDecode", "inputs": [{"name": "vae", "link": 5}]}],
            "links": [[5, 2]],
        },
        {"nodes": [{"id": 1, "type": "KSampler", "inputs": "x"}], "links": []},
        {"nodes": [{"id": 1, "type": "KSampler"}], "links": [7]},
        {"1": {"class_type": "KSampler", "inputs": [1, 2]}},
    ],
)
def test_malformed_files_are_one_line_errors_not_tracebacks(tmp_path, capsys, document):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    code, _, err = sdflow_cli("import", "comfy", str(path), "-o", str(tmp_path / "w.yaml"), capsys=capsys)
    assert code == 2
    assert err.startswith(f"error: {path}: malformed ComfyUI workflow (")


def test_backend_primitive_nodes_become_the_constants_they_hold(tmp_path):
    document = json.loads((FIXTURES / "txt2img_api.json").read_text())
    document["20"] = {"class_type": "PrimitiveString", "inputs": {"value": "a blue square"}}
    document["21"] = {"class_type": "PrimitiveInt", "inputs": {"value": 77}}
    document["6"]["inputs"]["text"] = ["20", 0]
    document["3"]["inputs"]["seed"] = ["21", 0]
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    conversion = convert(read(path), str(path))
    assert conversion.workflow.inputs["prompt"].default == "a blue square"
    assert conversion.workflow.inputs["seed"].default == 77


def test_a_comfyui_checkpoint_name_is_found_in_the_model_folders(
    tmp_path, single_files, model_folders, runner
):
    """img2img as ComfyUI saved it: `sd15/dreamshaper_8.safetensors` in ComfyUI's checkpoints folder."""
    model_folders("ComfyUI/models/checkpoints/sd15/dreamshaper_8.safetensors", single_files["sd15"][0])
    document = json.loads((FIXTURES / "img2img_api.json").read_text())
    document["12"]["inputs"]["steps"] = 2
    path = tmp_path / "img2img_api.json"
    path.write_text(json.dumps(document))
    workflow = convert(read(path), str(path), image_dir=str(EXAMPLE_INPUTS)).workflow
    assert workflow.nodes["checkpoint_1"].fields["checkpoint"] == "sd15/dreamshaper_8.safetensors"
    workflow.nodes["checkpoint_1"].fields["config"] = str(single_files["sd15"][1])  # tiny: not SD 1.5's sizes
    result = runner.run(workflow)
    with PILImage.open(result.files[0]) as picture:
        info = parse_infotext(picture.text["parameters"])  # a plain img2img: A1111 parameters too
    assert info.prompt == "a green circle on a blue background"
    assert info.settings["Model"] == "dreamshaper_8"
    assert (info.settings["Sampler"], info.settings["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert info.settings["Steps"] == "3" and info.settings["Seed"] == "7"  # int(2 / 0.6) scheduled, 2 run


def test_conditioning_concat_and_average_map_to_and_from_to_first_and_second(tmp_path):
    document = json.loads((FIXTURES / "txt2img_api.json").read_text())
    document["20"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "high detail", "clip": ["4", 1]}}
    document["21"] = {
        "class_type": "ConditioningConcat",
        "inputs": {"conditioning_to": ["6", 0], "conditioning_from": ["20", 0]},
    }
    document["22"] = {
        "class_type": "ConditioningAverage",
        "inputs": {
            "conditioning_to": ["21", 0],
            "conditioning_from": ["7", 0],
            "conditioning_to_strength": 0.75,
        },
    }
    document["3"]["inputs"]["positive"] = ["22", 0]
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    conversion = convert(read(path), str(path))
    assert fields(conversion, "concat_21") == {
        "type": "ConditioningConcat",
        "first": Link("prompt_6", "conditioning"),
        "second": Link("prompt_20", "conditioning"),
    }
    assert fields(conversion, "average_22") == {
        "type": "ConditioningAverage",
        "first": Link("concat_21", "conditioning"),
        "second": Link("prompt_7", "conditioning"),
        "weight": 0.75,  # ComfyUI: to * strength + from * (1 - strength)
    }
    assert fields(conversion, "sample_3")["positive"] == Link("average_22", "conditioning")
    validate(loads(dumps(conversion.workflow)))  # the links fit the nodes' types
