"""A1111's "parameters" text: written by SaveImage behind plain txt2img / img2img graphs, in
A1111's format, and read back."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

import sdflow
from sdflow.formats.infotext import Infotext, format_infotext, parse_infotext, quote, settings
from sdflow.interop.a1111 import model_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def saved_parameters(result) -> str | None:
    with PILImage.open(result.files[0]) as picture:
        return picture.text.get("parameters")


def test_txt2img_pictures_carry_the_a1111_parameters(runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    inputs = {
        "prompt": "a red, big circle",
        "negative": "blurry: soft",
        "seed": 7,
        "steps": 2,
        "sampler": "euler",
    }
    text = saved_parameters(runner.run(graph, inputs=inputs))
    assert text == (
        "a red, big circle\nNegative prompt: blurry: soft\n"
        "Steps: 2, Sampler: Euler, CFG scale: 4.0, Seed: 7, Size: 64x64, Model: shapes"
    )
    info = parse_infotext(text)
    assert (info.prompt, info.negative) == ("a red, big circle", "blurry: soft")
    assert info.settings == {
        "Steps": "2", "Sampler": "Euler", "CFG scale": "4.0", "Seed": "7", "Size": "64x64", "Model": "shapes",
    }  # fmt: skip


def test_karras_sigmas_are_a1111s_karras_schedule_type(runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["schedule"]["sigmas"] = "karras"
    info = parse_infotext(saved_parameters(runner.run(graph, inputs={"steps": 2, "sampler": "heun"})))
    assert (info.settings["Sampler"], info.settings["Schedule type"]) == ("Heun", "Karras")


def test_a_sampler_stopped_early_is_no_plain_txt2img(runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["denoised"]["end_step"] = 1
    assert saved_parameters(runner.run(graph, inputs={"steps": 2})) is None


def test_img2img_pictures_give_the_strength_and_the_seed_their_noise_continues(examples, runner):
    graph = sdflow.load(examples / "img2img.yaml")
    graph["positive"]["clip_skip"] = 1
    text = saved_parameters(runner.run(graph, inputs={"steps": 2, "seed": 11, "sampler": "dpmpp_2m_karras"}))
    info = parse_infotext(text)
    assert info.prompt == "a green circle on a blue background" and info.negative == ""
    assert "Negative prompt" not in text  # A1111 leaves the line out when it is empty
    assert info.settings == {
        "Steps": "2",
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": "4.0",
        "Seed": "11",  # AddNoise has seed null: it continues VAEEncode's stream, seeded 11
        "Size": "64x64",
        "Model": "shapes",
        "Denoising strength": "0.6",
        "Clip skip": "2",  # sdflow's clip_skip 1 is A1111's "clip skip 2"
    }


@pytest.mark.parametrize("example", ["inpaint.yaml", "hires_fix.yaml"])
def test_graphs_that_are_no_plain_txt2img_or_img2img_get_no_parameters(examples, runner, example):
    folder = examples if (examples / example).exists() else EXAMPLES
    result = runner.run(
        sdflow.load(folder / example),
        inputs={"steps": 2} | ({"hires_steps": 2} if "hires" in example else {}),
    )
    with PILImage.open(result.files[0]) as picture:
        assert "parameters" not in picture.text
        assert "sdflow:workflow" in picture.text


@pytest.mark.parametrize(
    ("value", "written"),
    [("plain", "plain"), ("a, b", '"a, b"'), ("k: v", '"k: v"'), ('say "hi"', 'say "hi"')],
)
def test_values_are_quoted_as_a1111_quotes_them(value, written):
    assert quote(value) == written


def test_format_and_parse_round_trip_multiline_prompts_and_quoted_values():
    info = Infotext(
        "line one\nline two",
        "bad, ugly",
        settings(20, "euler_ancestral", 7.5, 3, (512, 768), "sd15: v1", 0.5),
    )
    text = format_infotext(info)
    assert text.endswith('Seed: 3, Size: 512x768, Model: "sd15: v1", Denoising strength: 0.5')
    back = parse_infotext(text)
    assert (back.prompt, back.negative) == ("line one\nline two", "bad, ugly")
    assert back.settings["Sampler"] == "Euler a" and back.settings["Model"] == "sd15: v1"


@pytest.mark.parametrize(
    ("checkpoint", "name"),
    [
        ("builtin:shapes", "shapes"),
        ("sd15/dreamshaper_8.safetensors", "dreamshaper_8"),
        ("/models/my-sd/", "my-sd"),
    ],
)
def test_models_are_named_as_a1111_names_them(checkpoint, name):
    assert model_name(checkpoint) == name


def test_a_batch_of_prompts_gets_no_parameters(runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["positive"]["text"] = ["a red circle on a blue background", "a green square on a white background"]
    graph["empty"]["batch_size"] = 2
    result = runner.run(graph, inputs={"steps": 2})
    assert len(result.files) == 2
    for path in result.files:
        with PILImage.open(path) as picture:
            assert "parameters" not in picture.text
