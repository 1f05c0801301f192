"""`sdflow import a1111`: the workflow A1111's "parameters" text describes (prompt, negative, sampler
and schedule, steps, CFG, seed, size, model, clip skip, LoRAs, hires fix, img2img), which runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

import sdflow
from sdflow.cli import main
from sdflow.graphs.loading import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TEXT = (
    "a red circle on a blue background\nNegative prompt: blurry\n"
    "Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 4.0, Seed: 42, Size: 64x64, "
    "Model hash: 1a2b3c4d, Model: shapes, Clip skip: 2"
)


def imported(tmp_path: Path, capsys, text: str, *options: str) -> tuple[sdflow.Workflow, str]:
    """The workflow `sdflow import a1111` writes for a parameters text file, and its notes."""
    source = tmp_path / "parameters.txt"
    source.write_text(text)
    target = tmp_path / "flows" / "imported.yaml"
    code = main(["import", "a1111", str(source), "-o", str(target), *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.strip() == str(target)
    return load(target), captured.err


def fields(workflow, node_id: str) -> dict:
    spec = workflow.nodes[node_id]
    return {"type": spec.type, **spec.fields}


def settings(**changes: str) -> str:
    """TEXT with settings replaced (or added, or removed with '')."""
    head, line = TEXT.rsplit("\n", 1)
    pairs = dict(pair.split(": ", 1) for pair in line.split(", "))
    pairs.update(changes)
    return head + "\n" + ", ".join(f"{k}: {v}" for k, v in pairs.items() if v)


def test_a_parameters_text_imports_to_a_workflow_that_validates_and_runs(tmp_path, capsys, runner):
    workflow, notes = imported(tmp_path, capsys, TEXT, "--checkpoint", "builtin:tiny-sd15")
    assert fields(workflow, "schedule")["sampler"] == "dpmpp_2m"
    assert fields(workflow, "schedule")["sigmas"] == "karras"
    assert fields(workflow, "schedule")["steps"] == 3
    assert fields(workflow, "base")["cfg"] == 4.0
    assert {k: v.default for k, v in workflow.inputs.items()} == {
        "checkpoint": "builtin:tiny-sd15", "prompt": "a red circle on a blue background",
        "negative": "blurry", "seed": 42,
    }  # fmt: skip
    assert fields(workflow, "positive")["clip_skip"] == 1  # A1111's clip skip 2
    assert fields(workflow, "positive")["weighting"] == "a1111"
    assert (fields(workflow, "empty")["width"], fields(workflow, "empty")["height"]) == (64, 64)
    assert "Model hash 1a2b3c4d" in notes
    result = runner.run(workflow)
    with PILImage.open(result.files[0]) as png:
        assert png.size == (64, 64)


def test_the_model_name_sdflow_writes_for_a_builtin_names_that_builtin(tmp_path, capsys):
    workflow, _ = imported(tmp_path, capsys, TEXT)
    assert workflow.inputs["checkpoint"].default == "builtin:shapes"


def test_an_sdflow_pictures_parameters_reimport_to_the_same_pixels(tmp_path, capsys, runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    first = runner.run(
        graph, inputs={"steps": 3, "seed": 9, "sampler": "euler_ancestral", "prompt": "a tree"}
    )
    picture = Path(first.files[0])
    target = tmp_path / "again.yaml"
    assert main(["import", "a1111", str(picture), "-o", str(target)]) == 0, capsys.readouterr().err
    again = runner.run(load(target), output_dir=str(tmp_path / "again"))
    with PILImage.open(picture) as a, PILImage.open(again.files[0]) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("sampler", "extra", "expected"),
    [
        ("DPM++ 2M Karras", {"Schedule type": ""}, ("dpmpp_2m", "karras")),  # before A1111 1.9
        ("DPM++ 2M", {"Schedule type": ""}, ("dpmpp_2m", None)),
        ("DPM++ 2M", {"Schedule type": "", "Version": "v1.10.1"}, ("dpmpp_2m", "karras")),  # 'Automatic'
        ("Euler a", {"Schedule type": ""}, ("euler_ancestral", None)),
        ("UniPC", {"Schedule type": "Automatic"}, ("unipc", None)),
        ("Heun", {"Schedule type": "Karras"}, ("heun", "karras")),
    ],
)
def test_samplers_and_schedules_map_to_sdflows(tmp_path, capsys, sampler, extra, expected):
    workflow, _ = imported(tmp_path, capsys, settings(Sampler=sampler, **extra))
    schedule = fields(workflow, "schedule")
    assert (schedule["sampler"], schedule.get("sigmas")) == expected


def test_loras_in_the_prompt_become_a_chain_of_loadloras(tmp_path, capsys):
    text = (
        "a castle <lora:pixel-art:0.8>, <lora:style:0.3:0.7> <lyco:sketch:te=0.2:unet=0.9>\n"
        + TEXT.split("\n", 1)[1]
    )
    workflow, _ = imported(tmp_path, capsys, text)
    assert workflow.inputs["prompt"].default == "a castle ,  "  # the tags go, the rest stays (as in A1111)
    chain = [(f["file"], f["strength_model"], f["strength_clip"], str(f["model"])) for f in (
        fields(workflow, f"lora_{i}") for i in (1, 2, 3))]  # fmt: skip
    assert chain == [
        ("pixel-art", 0.8, 0.8, "ckpt.model"),
        ("style", 0.7, 0.3, "lora_1.model"),
        ("sketch", 0.9, 0.2, "lora_2.model"),
    ]
    assert str(fields(workflow, "schedule")["model"]) == "lora_3.model"
    assert str(fields(workflow, "positive")["clip"]) == "lora_3.clip"


def test_a_latent_hires_fix_upscales_the_latent_and_samples_again(tmp_path, capsys, runner):
    text = settings(
        **{"Denoising strength": "0.5", "Hires upscale": "2", "Hires steps": "2", "Hires upscaler": "Latent"}
    )
    workflow, _ = imported(tmp_path, capsys, text, "--checkpoint", "builtin:tiny-sd15")
    assert fields(workflow, "upscaled") == {
        "type": "LatentUpscale", "latent": fields(workflow, "upscaled")["latent"], "width": 128,
        "height": 128, "mode": "bilinear",
    }  # fmt: skip
    assert str(fields(workflow, "upscaled")["latent"]) == "base"
    assert fields(workflow, "hires_schedule")["steps"] == 2
    assert fields(workflow, "hires_noised")["strength"] == 0.5
    result = runner.run(workflow)
    with PILImage.open(result.files[0]) as png:
        assert png.size == (128, 128)


def test_a_pixel_hires_upscaler_decodes_resizes_and_encodes_with_a_note(tmp_path, capsys):
    text = settings(**{"Hires upscale": "1.5", "Hires upscaler": "R-ESRGAN 4x+", "Denoising strength": "0.4"})
    workflow, notes = imported(tmp_path, capsys, text)
    assert fields(workflow, "scaled")["width"] == 96 and fields(workflow, "scaled")["resample"] == "lanczos"
    assert fields(workflow, "reencoded")["type"] == "VAEEncode"
    assert "Hires upscaler 'R-ESRGAN 4x+' (an upscaling model) is not run" in notes


def test_img2img_from_an_init_picture_uses_the_denoising_strength(tmp_path, capsys, runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    init = tmp_path / "init.png"
    PILImage.open(EXAMPLES / "inputs" / "red_circle.png").save(init)
    text = settings(**{"Denoising strength": "0.6"})
    workflow, _ = imported(
        tmp_path, capsys, text, "--init-image", "init.png", "--checkpoint", "builtin:tiny-sd15"
    )
    assert workflow.inputs["image"].default == "../init.png"  # relative to the YAML in flows/
    assert workflow.inputs["strength"].default == 0.6
    assert str(fields(workflow, "encoded")["image"]) == "resized"
    result = runner.run(workflow)
    with PILImage.open(result.files[0]) as png:
        assert png.size == (64, 64)


def test_every_setting_sdflow_cannot_reproduce_is_reported_at_once(tmp_path, capsys):
    source = tmp_path / "parameters.txt"
    source.write_text(
        "a cat <hypernet:anime:1>\n" + settings(Sampler="DPM fast", Steps="many").split("\n", 1)[1]
    )
    assert main(["import", "a1111", str(source), "-o", str(tmp_path / "w.yaml")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 2)[2].split(":")[0] for line in lines] == ["<hypernet", "Sampler", "Steps"]
    assert not (tmp_path / "w.yaml").exists()


def png_with(tmp_path: Path, **chunks: str) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    path = tmp_path / "picture.png"
    PILImage.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


def test_import_comfy_on_an_a1111_picture_names_the_command_that_reads_it(tmp_path, capsys):
    path = png_with(tmp_path, parameters=TEXT)
    assert main(["import", "comfy", str(path), "-o", str(tmp_path / "w.yaml")]) == 2
    err = capsys.readouterr().err
    assert "it holds A1111 generation parameters: import them with `sdflow import a1111" in err


def test_import_a1111_on_a_comfyui_picture_names_the_command_that_reads_it(tmp_path, capsys):
    path = png_with(tmp_path, prompt="{}")
    assert main(["import", "a1111", str(path), "-o", str(tmp_path / "w.yaml")]) == 2
    err = capsys.readouterr().err
    assert "holds no A1111 parameters ('parameters' text) but a ComfyUI workflow: convert it with" in err


@pytest.mark.parametrize("kind", ["JPEG", "WEBP"])
def test_a_jpeg_or_webp_a1111_saved_imports_from_its_exif_user_comment(tmp_path, capsys, kind):
    exif = PILImage.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + TEXT.encode("utf-16-be")  # as A1111 writes it
    path = tmp_path / f"picture.{kind.lower()}"
    PILImage.new("RGB", (8, 8)).save(path, kind, exif=exif)
    target = tmp_path / "w.yaml"
    assert main(["import", "a1111", str(path), "-o", str(target)]) == 0, capsys.readouterr().err
    workflow = load(target)
    assert fields(workflow, "schedule")["sigmas"] == "karras"
    assert workflow.inputs["negative"].default == "blurry"
