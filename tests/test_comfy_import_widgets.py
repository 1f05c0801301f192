"""UI-format widget values are named by each node type's widget list, with the seed's "control after
generate" slot after the seed whatever it holds (`true` in older files, "randomize"... in newer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdflow.cli import main
from sdflow.formats.comfy_json import read
from sdflow.graphs.model import InputRef
from sdflow.interop.comfy import HANDLERS, ConversionError, convert

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"
DEFAULT_GRAPH = FIXTURES / "default_graph_ui.json"


def converted(tmp_path: Path, document: dict):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    return convert(read(path), str(path))


def with_ksampler_widgets(values: list) -> dict:
    document = json.loads(DEFAULT_GRAPH.read_text())
    next(n for n in document["nodes"] if n["type"] == "KSampler")["widgets_values"] = values
    return document


def test_the_frontends_default_graph_with_true_after_the_seed_imports():
    conversion = convert(read(DEFAULT_GRAPH), str(DEFAULT_GRAPH))
    nodes = conversion.workflow.nodes
    assert nodes["schedule_3"].fields["sampler"] == "euler"
    assert nodes["schedule_3"].fields["steps"] == 20
    assert nodes["sample_3"].fields["cfg"] == 8.0
    assert nodes["noise_3"].fields["seed"] == InputRef("seed")
    assert conversion.workflow.inputs["seed"].default == 156680208700286
    assert "strength" not in nodes["noise_3"].fields  # denoise 1: a full run


def test_the_command_writes_the_default_graph_as_a_valid_workflow(tmp_path, capsys):
    assert main(["import", "comfy", str(DEFAULT_GRAPH), "-o", str(tmp_path / "default.yaml")]) == 0
    assert "sampler: euler" in (tmp_path / "default.yaml").read_text()


@pytest.mark.parametrize("control", [True, False, "randomize", "fixed", "increment", "decrement"])
def test_every_control_after_generate_value_fills_its_own_slot(tmp_path, control):
    conversion = converted(tmp_path, with_ksampler_widgets([5, control, 12, 6.5, "heun", "karras", 0.5]))
    nodes = conversion.workflow.nodes
    assert conversion.workflow.inputs["seed"].default == 5
    assert nodes["schedule_3"].fields == {**nodes["schedule_3"].fields, "sampler": "heun", "sigmas": "karras"}
    assert nodes["schedule_3"].fields["steps"] == 24  # 12 steps at denoise 0.5, as ComfyUI counts them
    assert nodes["sample_3"].fields["cfg"] == 6.5


def test_widget_values_written_without_the_control_slot_map_by_the_list_without_it(tmp_path):
    conversion = converted(tmp_path, with_ksampler_widgets([5, 12, 6.5, "heun", "normal", 1.0]))
    assert conversion.workflow.nodes["schedule_3"].fields["steps"] == 12
    assert conversion.workflow.nodes["sample_3"].fields["cfg"] == 6.5


def test_an_unexpected_number_of_widget_values_is_read_by_position_with_a_note(tmp_path):
    conversion = converted(
        tmp_path, with_ksampler_widgets([5, "fixed", 12, 6.5, "heun", "normal", 1.0, "new"])
    )
    assert conversion.workflow.nodes["schedule_3"].fields["steps"] == 12
    assert any("node 3 (KSampler): 8 widget values where sdflow knows 7" in note for note in conversion.notes)


def test_a_handler_without_a_widget_list_refuses_positional_values(tmp_path, monkeypatch):
    monkeypatch.setitem(HANDLERS, "ImageBlur", HANDLERS["ImageInvert"])
    document = json.loads(DEFAULT_GRAPH.read_text())
    document["nodes"].append({"id": 30, "type": "ImageBlur", "mode": 0, "widgets_values": [3, 1.0]})
    with pytest.raises(ConversionError) as caught:
        converted(tmp_path, document)
    assert [e.message for e in caught.value.errors] == [
        "node 30 (ImageBlur): sdflow has no widget list for this node type: export the API format"
    ]
