"""The Python builder: typed node calls, output handles, and build-time errors as good as the loader's."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

import sdflow
from sdflow.errors import WorkflowErrors
from sdflow.graphs.model import InputRef, Link
from sdflow.nodes import registry
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.fields import fields_of
from sdflow.nodes.types import Latent

ROOT = Path(__file__).resolve().parent.parent
THIS_FILE = Path(__file__).name


def _gen_stubs():
    spec = importlib.util.spec_from_file_location("gen_stubs", ROOT / "tools" / "gen_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def graph() -> sdflow.Graph:
    return sdflow.Graph()


@pytest.fixture
def ckpt(graph: sdflow.Graph):
    return graph.LoadCheckpoint(id="ckpt")


def _only_error(excinfo: pytest.ExceptionInfo[WorkflowErrors]):
    assert len(excinfo.value.errors) == 1, str(excinfo.value)
    return excinfo.value.errors[0]


# -- building ---------------------------------------------------------------------------------------


def test_a_node_call_adds_a_node_whose_output_handles_become_links(graph, ckpt):
    positive = graph.CLIPEncode(id="positive", clip=ckpt.clip, text="a red circle")

    assert graph.nodes["positive"].type == "CLIPEncode"
    assert graph.nodes["positive"].fields == {"clip": Link("ckpt", "clip"), "text": "a red circle"}
    assert positive.conditioning.type is sdflow.nodes.types.Conditioning


def test_a_node_with_one_output_can_be_passed_itself_as_the_link(graph, ckpt):
    empty = graph.EmptyLatent(width=64, height=64)
    schedule = graph.Scheduler(model=ckpt.model)
    graph.AddNoise(id="noised", latent=empty, schedule=schedule)

    assert graph.nodes["noised"].fields["latent"] == Link("emptylatent")
    assert graph.nodes["noised"].fields["schedule"] == Link("scheduler")


def test_ids_without_an_explicit_id_are_the_lowercase_type_numbered_from_the_second(graph):
    ids = [graph.LoadCheckpoint().id for _ in range(3)]

    assert ids == ["loadcheckpoint", "loadcheckpoint_2", "loadcheckpoint_3"]


def test_a_workflow_input_becomes_an_input_reference_typed_from_its_default(graph, ckpt):
    seed = graph.input("seed", 42)
    cfg = graph.input("cfg", 4.0, description="guidance")
    prompt = graph.input("prompt", type=str)
    graph.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)

    assert (seed.spec.type, seed.spec.default, seed.spec.required) == ("int", 42, False)
    assert (cfg.spec.type, cfg.spec.description) == ("float", "guidance")
    assert (prompt.spec.type, prompt.spec.required) == ("str", True)
    assert graph.nodes["positive"].fields["text"] == InputRef("prompt")


def test_declaring_a_known_input_without_a_default_returns_the_declared_one(graph):
    seed = graph.input("seed", 42)

    assert graph.input("seed") == seed
    with pytest.raises(sdflow.WorkflowError, match="input 'seed' is already declared"):
        graph.input("seed", 7)


def test_reading_a_field_gives_back_handles_constants_and_defaults(graph, ckpt):
    prompt = graph.input("prompt", "x")
    positive = graph.CLIPEncode(clip=ckpt.clip, text=prompt)

    assert positive["clip"] == ckpt.clip
    assert positive["text"] == prompt
    assert positive["clip_skip"] == 0


def test_set_and_item_assignment_change_fields(graph, ckpt):
    positive = graph.CLIPEncode(id="positive", clip=ckpt.clip, text="one")

    positive.set(text="two", clip_skip=1)
    assert graph.nodes["positive"].fields["text"] == "two"
    graph["positive"]["text"] = "three"
    assert graph.nodes["positive"].fields == {"clip": Link("ckpt", "clip"), "text": "three", "clip_skip": 1}


def test_attribute_assignment_points_to_the_field_syntax(graph, ckpt):
    positive = graph.CLIPEncode(clip=ckpt.clip)

    with pytest.raises(AttributeError, match=r"node\['text'\] = \.\.\."):
        positive.text = "x"


def test_remove_drops_an_unused_node_and_refuses_a_used_one(graph, ckpt):
    positive = graph.CLIPEncode(clip=ckpt.clip)

    with pytest.raises(sdflow.WorkflowError, match="cannot remove 'ckpt': it feeds clipencode"):
        graph.remove("ckpt")
    graph.remove(positive.id)
    assert list(graph.nodes) == ["ckpt"]


def test_any_registered_node_class_is_a_graph_method_without_editing_the_builder(graph):
    class Halve(Node):
        """Test node: halves a latent."""

        outputs: ClassVar[dict[str, type]] = {"latent": Latent}
        latent: Latent = Field(description="input")
        factor: float = Field(0.5, gt=0.0, le=1.0, description="scale")

        def run(self, ctx: RunContext) -> dict[str, Any]:
            return {"latent": self.latent.with_(samples=self.latent.samples * self.factor)}

    try:
        empty = graph.EmptyLatent(width=8, height=8)
        halved = graph.Halve(latent=empty, factor=0.25)
        assert graph.nodes[halved.id].fields == {"latent": Link("emptylatent"), "factor": 0.25}
        assert list(inspect.signature(graph.Halve).parameters) == ["id", "latent", "factor"]
        with pytest.raises(WorkflowErrors, match="Input should be greater than 0"):
            graph.Halve(latent=empty, factor=0.0)
    finally:
        registry.REGISTERED.pop("Halve")


def test_node_calls_have_the_node_fields_as_their_runtime_signature(graph):
    parameters = inspect.signature(graph.CLIPEncode).parameters

    assert list(parameters) == ["id", *fields_of(registry.get("CLIPEncode"))]
    assert list(parameters)[:4] == ["id", "clip", "text", "clip_skip"]
    assert parameters["clip"].default is inspect.Parameter.empty
    assert parameters["clip_skip"].default == 0
    assert graph.CLIPEncode.__doc__ == registry.get("CLIPEncode").summary()


# -- build-time errors ------------------------------------------------------------------------------


def test_a_wrong_link_type_fails_at_once_naming_node_field_both_types_and_the_call_line(graph, ckpt):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.CLIPEncode(id="positive", clip=ckpt.vae)
    line = inspect.currentframe().f_lineno - 1

    error = _only_error(excinfo)
    assert (error.location.node, error.location.field) == ("positive", "clip")
    assert error.message == "link type mismatch: ckpt.vae is Vae, but CLIPEncode.clip expects Clip"
    assert Path(error.location.file).name == THIS_FILE and error.location.line == line
    assert str(error).startswith(f"{error.location.file}:{line}, node 'positive', field 'clip': ")


def test_an_unknown_field_fails_suggesting_the_closest_one(graph, ckpt):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.CLIPEncode(id="positive", clip=ckpt.clip, txt="hello")

    error = _only_error(excinfo)
    assert (error.location.node, error.location.field) == ("positive", "txt")
    assert "CLIPEncode has no field 'txt'; did you mean 'text'?" in error.message


def test_an_out_of_range_value_fails_naming_the_range_and_the_value(graph):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.EmptyLatent(id="empty", width=100)

    error = _only_error(excinfo)
    assert (error.location.node, error.location.field) == ("empty", "width")
    assert "multiple of 8" in error.message and "got 100" in error.message


def test_a_constant_of_the_wrong_type_fails_naming_both_types(graph, ckpt):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.Scheduler(id="schedule", model=ckpt.model, steps="many")

    error = _only_error(excinfo)
    assert error.location.field == "steps"
    assert "expected int" in error.message and "got 'many'" in error.message


def test_an_input_of_the_wrong_type_fails_naming_both_types(graph, ckpt):
    prompt = graph.input("prompt", "a cat")

    with pytest.raises(WorkflowErrors) as excinfo:
        graph.Scheduler(id="schedule", model=ckpt.model, steps=prompt)

    error = _only_error(excinfo)
    assert error.location.field == "steps"
    assert error.message == "input 'prompt' is a str, but Scheduler.steps expects int"


def test_a_missing_required_link_fails_naming_the_field_and_its_type(graph):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.CLIPEncode(id="positive", text="x")

    error = _only_error(excinfo)
    assert (error.location.node, error.location.field) == ("positive", "clip")
    assert error.message == "CLIPEncode needs field 'clip' (a link to a Clip)"


def test_a_node_with_several_outputs_passed_as_a_link_must_name_one(graph, ckpt):
    with pytest.raises(WorkflowErrors) as excinfo:
        graph.CLIPEncode(id="positive", clip=ckpt)

    assert (
        "'ckpt' (LoadCheckpoint) has outputs model, clip, vae, clip_vision: name one"
        in _only_error(excinfo).message
    )


def test_a_handle_from_another_graph_is_refused(graph):
    other = sdflow.Graph().LoadCheckpoint(id="ckpt")

    with pytest.raises(WorkflowErrors) as excinfo:
        graph.CLIPEncode(id="positive", clip=other.clip)

    assert "belongs to another Graph" in excinfo.value.errors[0].message


def test_a_refused_call_leaves_the_graph_unchanged(graph, ckpt):
    with pytest.raises(WorkflowErrors):
        graph.CLIPEncode(id="positive", clip=ckpt.vae)

    assert list(graph.nodes) == ["ckpt"]


def test_a_refused_change_leaves_the_node_unchanged(graph, ckpt):
    empty = graph.EmptyLatent(id="empty", width=64)

    with pytest.raises(WorkflowErrors, match="multiple of 8"):
        empty.set(width=65)
    assert graph.nodes["empty"].fields == {"width": 64}


def test_a_change_that_would_make_a_cycle_fails(graph, ckpt):
    empty = graph.EmptyLatent()
    schedule = graph.Scheduler(model=ckpt.model)
    noised = graph.AddNoise(id="noised", latent=empty, schedule=schedule)
    again = graph.AddNoise(id="again", latent=noised, schedule=schedule)

    with pytest.raises(WorkflowErrors) as excinfo:
        noised["latent"] = again

    error = _only_error(excinfo)
    assert (error.location.node, error.location.field) == ("noised", "latent")
    assert "cycle" in error.message


def test_a_duplicate_id_fails_naming_the_node_using_it(graph, ckpt):
    with pytest.raises(sdflow.WorkflowError, match="node id 'ckpt' is already used by a LoadCheckpoint"):
        graph.EmptyLatent(id="ckpt")


def test_a_misspelt_node_type_suggests_the_closest_one(graph):
    with pytest.raises(AttributeError, match="did you mean the node type 'CLIPEncode'"):
        graph.ClipEncode(text="x")


def test_a_misspelt_output_suggests_the_closest_one(ckpt):
    with pytest.raises(AttributeError, match="has no output 'clips'; did you mean 'clip'"):
        ckpt.clips  # noqa: B018


# -- typed stubs ------------------------------------------------------------------------------------


def test_the_committed_node_stubs_match_the_registry():
    stubs = _gen_stubs()

    assert stubs.STUB.read_text(encoding="utf-8") == stubs.render(), (
        "sdflow/graphs/node_calls.pyi is out of date: run python tools/gen_stubs.py"
    )


def test_the_stubs_type_every_field_of_every_node():
    tree = ast.parse(_gen_stubs().render())
    calls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NodeCalls")
    methods = {f.name: f for f in calls.body if isinstance(f, ast.FunctionDef)}

    assert set(methods) == set(registry.all_types())
    clip_encode = methods["CLIPEncode"]
    annotations = {a.arg: ast.unparse(a.annotation) for a in clip_encode.args.kwonlyargs}
    assert annotations == {
        "id": "str | None",
        "clip": "Linkable[Clip]",
        "text": "str | list[str] | Input",
        "clip_skip": "int | Input",
        "weighting": "_CLIPEncode_weighting | Input",
        "truncate": "bool | Input",
        "allow_pickle": "bool | Input",
        "original_width": "int | Input | None",
        "original_height": "int | Input | None",
        "crop_left": "int | Input",
        "crop_top": "int | Input",
        "target_width": "int | Input | None",
        "target_height": "int | Input | None",
        "t5_text": "str | list[str] | Input | None",
        "clip_g_text": "str | list[str] | Input | None",
        "t5_length": "int | Input | None",
        "aesthetic_score": "float | Input | None",
    }
    assert ast.unparse(clip_encode.returns) == "CLIPEncodeNode"
