"""`sdflow import comfy` of ControlNet workflows: ControlNetLoader / DiffControlNetLoader, ControlNetApply
(positive side only) and ControlNetApplyAdvanced map onto LoadControlNet and ApplyControlNet, and run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sdflow.errors import Location
from sdflow.formats.comfy_json import parse
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps, loads
from sdflow.interop.comfy import convert
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "sdflow" / "builtin" / "tiny-sd15")
CONTROL = str(ROOT / "sdflow" / "builtin" / "tiny-sd15-control")
PICTURE = str(ROOT / "examples" / "inputs" / "shapes.png")


def node(kind: str, **inputs) -> dict:
    return {"class_type": kind, "inputs": inputs}


def graph(apply: dict, loader: dict | None = None) -> dict:
    positive, negative = (
        (["10", 0], ["10", 1])
        if apply["class_type"] == "ControlNetApplyAdvanced"
        else (
            ["10", 0],
            ["3", 0],
        )
    )
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name=TINY),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle"),
        "3": node("CLIPTextEncode", clip=["1", 1], text="blurry"),
        "4": node("LoadImage", image=PICTURE),
        "5": node("Canny", image=["4", 0], low_threshold=0.4, high_threshold=0.8),
        "6": loader or node("ControlNetLoader", control_net_name=CONTROL),
        "7": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "8": node(
            "KSampler",
            model=["1", 0],
            positive=positive,
            negative=negative,
            latent_image=["7", 0],
            seed=5,
            steps=4,
            cfg=5.0,
            sampler_name="ddim",
            scheduler="normal",
            denoise=1.0,
        ),
        "9": node("VAEDecode", samples=["8", 0], vae=["1", 2]),
        "10": apply,
        "11": node("SaveImage", images=["9", 0], filename_prefix="control"),
    }


ADVANCED = node(
    "ControlNetApplyAdvanced", positive=["2", 0], negative=["3", 0], control_net=["6", 0], image=["5", 0],
    strength=0.8, start_percent=0.1, end_percent=0.9,
)  # fmt: skip
SIMPLE = node("ControlNetApply", conditioning=["2", 0], control_net=["6", 0], image=["5", 0], strength=0.7)


def converted(comfy: dict):
    conversion = convert(parse(comfy, Location("api.json")), "api.json", None)
    text = dumps(conversion.workflow)
    validate(loads(text, "converted.yaml"))
    return conversion, text


def by_type(workflow, kind: str):
    [spec] = [s for s in workflow.nodes.values() if s.type == kind]
    return spec


def decoded(text: str, **inputs) -> np.ndarray:
    result = Runner(device="cpu", dtype="fp32").run(
        loads(text, "c.yaml"), inputs=inputs, outputs=["decode_9"]
    )
    return result["decode_9.image"].pixels.numpy()


def test_controlnet_apply_advanced_maps_strength_and_window() -> None:
    conversion, _ = converted(graph(ADVANCED))
    apply = by_type(conversion.workflow, "ApplyControlNet")
    assert (apply.fields["strength"], apply.fields["start_percent"], apply.fields["end_percent"]) == (
        0.8,
        0.1,
        0.9,
    )
    assert by_type(conversion.workflow, "LoadControlNet").fields["file"] == CONTROL


def test_an_imported_controlnet_workflow_runs_and_the_control_changes_it() -> None:
    _, text = converted(graph(ADVANCED))
    _, off = converted(graph({**ADVANCED, "inputs": {**ADVANCED["inputs"], "strength": 0.0}}))
    assert np.abs(decoded(text) - decoded(off)).max() > 0.01


def test_controlnet_apply_steers_only_the_positive_side() -> None:
    conversion, text = converted(graph(SIMPLE))
    loop = by_type(conversion.workflow, "DenoiseLoop")
    apply = by_type(conversion.workflow, "ApplyControlNet")
    assert loop.fields["positive"].node == apply.id and loop.fields["negative"].node != apply.id
    assert "prompt" in conversion.workflow.inputs and "negative" in conversion.workflow.inputs
    assert decoded(text).shape == (1, 3, 64, 64)


def test_diff_controlnet_loader_loads_the_file_with_a_note() -> None:
    loader = node("DiffControlNetLoader", model=["1", 0], control_net_name=CONTROL)
    conversion, _ = converted(graph(ADVANCED, loader))
    assert by_type(conversion.workflow, "LoadControlNet").fields["file"] == CONTROL
    assert any("DiffControlNetLoader" in note for note in conversion.notes)


@pytest.mark.parametrize("kind", ["ControlNetLoader", "DiffControlNetLoader"])
def test_a_loader_without_a_file_name_is_reported(kind: str) -> None:
    from sdflow.interop.comfy import ConversionError

    loader = node(kind, model=["1", 0])
    with pytest.raises(ConversionError, match="control_net_name"):
        converted(graph(ADVANCED, loader))
