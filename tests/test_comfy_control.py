"""`sdflow import comfy` of ControlNet workflows: ControlNetLoader / DiffControlNetLoader, ControlNetApply
(positive side only) and ControlNetApplyAdvanced map onto LoadControlNet and ApplyControlNet, and run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from workflows import comfy_converted, spec_of_type

from sdflow.graphs.yaml_io import loads
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


def decoded(text: str, **inputs) -> np.ndarray:
    result = Runner(device="cpu", dtype="fp32").run(
        loads(text, "c.yaml"), inputs=inputs, outputs=["decode_9"]
    )
    return result["decode_9.image"].pixels.numpy()


def test_controlnet_apply_advanced_maps_strength_and_window() -> None:
    conversion, _ = comfy_converted(graph(ADVANCED))
    apply = spec_of_type(conversion.workflow, "ApplyControlNet")
    assert (apply.fields["strength"], apply.fields["start_percent"], apply.fields["end_percent"]) == (
        0.8,
        0.1,
        0.9,
    )
    assert spec_of_type(conversion.workflow, "LoadControlNet").fields["file"] == CONTROL


def test_an_imported_controlnet_workflow_runs_and_the_control_changes_it() -> None:
    _, text = comfy_converted(graph(ADVANCED))
    _, off = comfy_converted(graph({**ADVANCED, "inputs": {**ADVANCED["inputs"], "strength": 0.0}}))
    assert np.abs(decoded(text) - decoded(off)).max() > 0.01


def test_controlnet_apply_steers_only_the_positive_side() -> None:
    conversion, text = comfy_converted(graph(SIMPLE))
    loop = spec_of_type(conversion.workflow, "DenoiseLoop")
    apply = spec_of_type(conversion.workflow, "ApplyControlNet")
    assert loop.fields["positive"].node == apply.id and loop.fields["negative"].node != apply.id
    assert "prompt" in conversion.workflow.inputs and "negative" in conversion.workflow.inputs
    assert decoded(text).shape == (1, 3, 64, 64)


def test_diff_controlnet_loader_loads_the_file_with_a_note() -> None:
    loader = node("DiffControlNetLoader", model=["1", 0], control_net_name=CONTROL)
    conversion, _ = comfy_converted(graph(ADVANCED, loader))
    assert spec_of_type(conversion.workflow, "LoadControlNet").fields["file"] == CONTROL
    assert any("DiffControlNetLoader" in note for note in conversion.notes)


@pytest.mark.parametrize("kind", ["ControlNetLoader", "DiffControlNetLoader"])
def test_a_loader_without_a_file_name_is_reported(kind: str) -> None:
    from sdflow.interop.comfy import ConversionError

    loader = node(kind, model=["1", 0])
    with pytest.raises(ConversionError, match="control_net_name"):
        comfy_converted(graph(ADVANCED, loader))


def test_a_ui_format_controlnet_workflow_names_its_widgets(tmp_path: Path) -> None:
    import json

    from sdflow.formats.comfy_json import read

    document = json.loads(
        (Path(__file__).parent / "fixtures" / "comfy" / "default_graph_ui.json").read_text()
    )
    sampler = next(n for n in document["nodes"] if n["type"] == "KSampler")
    old = {i["name"]: i["link"] for i in sampler["inputs"]}
    prompts = {
        link[0]: link[1:3] for link in document["links"] if link[0] in (old["positive"], old["negative"])
    }
    document["links"] = [link for link in document["links"] if link[0] not in prompts]

    def ui(node_id: int, kind: str, widgets: list, inputs: dict[str, int]) -> dict:
        return {"id": node_id, "type": kind, "inputs": [{"name": k, "link": v} for k, v in inputs.items()],
                "outputs": [], "widgets_values": widgets}  # fmt: skip

    def link(link_id: int, source: list, target: int, slot: int) -> list:
        return [link_id, *source, target, slot, "*"]

    document["nodes"] += [
        ui(10, "LoadImage", ["shapes.png", "image"], {}),
        ui(11, "Canny", [0.4, 0.8], {"image": 101}),
        ui(12, "ControlNetLoader", [CONTROL], {}),
        ui(13, "ControlNetApplyAdvanced", [0.6, 0.2, 0.8],
           {"positive": 102, "negative": 103, "control_net": 104, "image": 105}),
    ]  # fmt: skip
    document["links"] += [
        link(101, [10, 0], 11, 0),
        link(102, prompts[old["positive"]], 13, 0),
        link(103, prompts[old["negative"]], 13, 1),
        link(104, [12, 0], 13, 2),
        link(105, [11, 0], 13, 3),
        link(106, [13, 0], 3, 1),
        link(107, [13, 1], 3, 2),
    ]
    for item in sampler["inputs"]:
        item["link"] = {"positive": 106, "negative": 107}.get(item["name"], item["link"])
    path = tmp_path / "control_ui.json"
    path.write_text(json.dumps(document))
    conversion = convert(read(path), str(path))
    apply = spec_of_type(conversion.workflow, "ApplyControlNet")
    assert (apply.fields["strength"], apply.fields["start_percent"], apply.fields["end_percent"]) == (
        0.6,
        0.2,
        0.8,
    )
    assert spec_of_type(conversion.workflow, "LoadControlNet").fields["file"] == CONTROL
    assert spec_of_type(conversion.workflow, "Canny").fields["low"] == 102
