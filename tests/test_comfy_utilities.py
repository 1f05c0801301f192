"""`sdflow import comfy` of the merging, latent/image utility and model-patch nodes: each maps onto the
sdflow node of the same name and fields, and the converted workflows run."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdflow.errors import Location
from sdflow.formats.comfy_json import parse
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps, loads
from sdflow.interop.comfy import convert
from sdflow.runner import Runner

TINY = str(Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15")


def node(kind: str, **inputs) -> dict:
    return {"class_type": kind, "inputs": inputs}


def converted(graph: dict):
    conversion = convert(parse(graph, Location("api.json")), "api.json", None)
    text = dumps(conversion.workflow)
    validate(loads(text, "converted.yaml"))
    return conversion.workflow, text


def by_type(workflow, kind: str):
    [spec] = [s for s in workflow.nodes.values() if s.type == kind]
    return spec


MERGE = {
    "1": node("CheckpointLoaderSimple", ckpt_name=TINY),
    "2": node("CheckpointLoaderSimple", ckpt_name=TINY),
    "3": node("ModelMergeSimple", model1=["1", 0], model2=["2", 0], ratio=0.25),
    "4": node("CLIPSetLastLayer", clip=["1", 1], stop_at_clip_layer=-2),
    "5": node("CLIPMergeSimple", clip1=["4", 0], clip2=["2", 1], ratio=0.5),
    "6": node(
        "CheckpointSave", model=["3", 0], clip=["5", 0], vae=["1", 2], filename_prefix="checkpoints/mix"
    ),
}


def test_a_merge_and_save_recipe_imports_and_runs(tmp_path):
    workflow, text = converted(MERGE)
    assert by_type(workflow, "ModelMergeSimple").fields["ratio"] == 0.25
    assert by_type(workflow, "CLIPMergeSimple").fields["ratio"] == 0.5
    assert by_type(workflow, "CheckpointSave").fields["filename_prefix"] == "checkpoints/mix"
    result = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path)).run(loads(text, "mix.yaml"))
    [saved] = [Path(p) for p in result.files]
    assert saved.name == "mix_00001.safetensors" and saved.parent.name == "checkpoints"


def test_per_block_ratios_map_dotted_names_onto_fields():
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name=TINY),
        "2": node("CheckpointLoaderSimple", ckpt_name=TINY),
        "3": node(
            "ModelMergeSD1",
            model1=["1", 0],
            model2=["2", 0],
            **{"input_blocks.3": 0.2, "out.": 0.7, "time_embed.": 0.1},
        ),
        "4": node("TomePatchModel", model=["3", 0], ratio=0.4),
    }
    workflow, _ = converted(graph)
    fields = by_type(workflow, "ModelMergeSD1").fields
    assert (fields["input_blocks_3"], fields["out"], fields["time_embed"], fields["input_blocks_4"]) == (
        0.2,
        0.7,
        0.1,
        1.0,
    )
    assert by_type(workflow, "TomePatchModel").fields["ratio"] == 0.4


def test_latent_and_image_utilities_map_onto_their_nodes():
    graph = {
        "1": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "2": node("LatentUpscaleBy", samples=["1", 0], upscale_method="bislerp", scale_by=1.5),
        "3": node("LatentComposite", samples_to=["2", 0], samples_from=["1", 0], x=8, y=16, feather=8),
        "4": node("RepeatLatentBatch", samples=["3", 0], amount=2),
        "5": node("LoadImage", image="picture.png"),
        "6": node("ImagePadForOutpaint", image=["5", 0], left=0, top=64, right=0, bottom=0, feathering=24),
        "7": node(
            "LatentCompositeMasked",
            destination=["4", 0],
            source=["1", 0],
            x=0,
            y=0,
            resize_source=False,
            mask=["6", 1],
        ),
    }
    workflow, _ = converted(graph)
    assert by_type(workflow, "LatentUpscaleBy").fields["upscale_method"] == "bislerp"
    assert by_type(workflow, "LatentComposite").fields["feather"] == 8
    assert by_type(workflow, "RepeatLatentBatch").fields["amount"] == 2
    pad = by_type(workflow, "ImagePadForOutpaint")
    assert (pad.fields["top"], pad.fields["feathering"]) == (64, 24)
    masked = by_type(workflow, "LatentCompositeMasked")
    assert masked.fields["mask"].node == pad.id and masked.fields["mask"].output == "mask"


@pytest.mark.parametrize("kind", ["ConditioningZeroOut"])
def test_conditioning_zero_out_takes_the_encoded_prompt(kind):
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name=TINY),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle"),
        "3": node(kind, conditioning=["2", 0]),
    }
    workflow, _ = converted(graph)
    assert by_type(workflow, kind).fields["conditioning"].node == by_type(workflow, "CLIPEncode").id


def test_area_composition_and_prompt_scheduling_import():
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name=TINY),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle"),
        "3": node("CLIPTextEncode", clip=["1", 1], text="a blue square"),
        "4": node("ConditioningSetArea", conditioning=["3", 0], width=32, height=64, x=0, y=0, strength=1.5),
        "5": node("ConditioningSetTimestepRange", conditioning=["2", 0], start=0.0, end=0.6),
        "6": node("ConditioningCombine", conditioning_1=["5", 0], conditioning_2=["4", 0]),
    }
    workflow, _ = converted(graph)
    area = by_type(workflow, "ConditioningSetArea").fields
    assert (area["width"], area["height"], area["strength"]) == (32, 64, 1.5)
    assert by_type(workflow, "ConditioningSetTimestepRange").fields["end"] == 0.6
    combine = by_type(workflow, "ConditioningCombine").fields
    assert combine["conditioning_2"].node == by_type(workflow, "ConditioningSetArea").id
