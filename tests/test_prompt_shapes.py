"""On the built-in shapes model: weights and text after token 77 change the picture; plain prompts
encode exactly as before prompts were parsed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

import sdflow

ROOT = Path(__file__).resolve().parent.parent
SHAPES = ROOT / "sdflow" / "builtin" / "shapes"


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> sdflow.Runner:
    return sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


@pytest.fixture(params=["builtin:shapes", "builtin:shapes-xl"])
def shapes(request, runner):
    """Draw with the txt2img example on the SD 1.x or the SDXL shapes model."""
    graph = sdflow.load(ROOT / "examples" / "txt2img.yaml")

    def draw(prompt: str, **fields) -> np.ndarray:
        for name, value in {"text": prompt, "truncate": False, "weighting": "comfy", **fields}.items():
            graph["positive"][name] = value
        inputs = {"seed": 42, "steps": 8, "checkpoint": request.param}
        result = runner.run(graph, inputs=inputs, outputs=["decoded"])
        return np.asarray(result.image("decoded").convert("RGB")).astype(np.float32)

    return draw


def test_a_weighted_prompt_draws_differently(shapes):
    plain = shapes("a red circle on a blue background")
    for weighting in ("comfy", "a1111"):
        weighted = shapes("a (red:1.4) circle on a blue background", weighting=weighting)
        assert np.abs(weighted - plain).mean() > 0.5, weighting


FILLER = "a green square on a white background, " * 3  # ~96 tokens with the shapes vocabulary


def test_a_colour_after_token_77_changes_the_picture_unless_truncated(shapes):
    red, blue = shapes(FILLER + "a red circle"), shapes(FILLER + "a blue circle")
    assert np.abs(red - blue).mean() > 0.5

    with pytest.warns(sdflow.SdflowWarning, match="dropped"):
        red_cut = shapes(FILLER + "a red circle", truncate=True)
        blue_cut = shapes(FILLER + "a blue circle", truncate=True)
    assert np.array_equal(red_cut, blue_cut)


@pytest.mark.parametrize("text", ["a red circle on a blue background", "", "a green triangle, white"])
def test_plain_prompts_encode_bit_identically_to_the_old_node(text):
    tokenizer = CLIPTokenizer.from_pretrained(SHAPES, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(SHAPES, subfolder="text_encoder", torch_dtype=torch.float32)
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        before = encoder(ids)[0]

    graph = sdflow.Graph()
    ckpt = graph.LoadCheckpoint(checkpoint="builtin:shapes")
    encoded = graph.CLIPEncode(clip=ckpt.clip, text=text)
    result = sdflow.Runner(device="cpu", dtype="fp32").run(graph, outputs=[encoded.id])

    assert torch.equal(result.tensor(encoded.id), before)


def _dominant_colours(pixels: np.ndarray) -> set[str]:
    spec = importlib.util.spec_from_file_location("shapes_data", ROOT / "tools" / "shapes" / "data.py")
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    return set(list(data.nearest_color_counts(pixels))[:2])


@pytest.mark.parametrize("checkpoint", ["builtin:shapes", "builtin:shapes-xl"])
def test_a_list_of_prompts_draws_one_picture_per_prompt(runner, checkpoint):
    graph = sdflow.load(ROOT / "examples" / "txt2img.yaml")
    graph["positive"]["text"] = ["a red circle on a blue background", "a green square on a white background"]
    graph["empty"]["batch_size"] = 2
    inputs = {"steps": 20, "sampler": "euler", "checkpoint": checkpoint}
    pictures = runner.run(graph, inputs=inputs, outputs=["decoded"]).images("decoded")

    assert [_dominant_colours(np.asarray(p.convert("RGB"))) for p in pictures] == [
        {"red", "blue"},
        {"green", "white"},
    ]
