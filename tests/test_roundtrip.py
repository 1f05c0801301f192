"""YAML <-> Graph round trips: the builder and the loader make the same model, and each reads the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

import sdflow
from sdflow.graphs.model import Link
from sdflow.nodes import registry
from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.types import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WORKFLOWS = sorted(EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_every_example_workflow_survives_yaml_graph_yaml_graph(path: Path):
    graph = sdflow.load(path)
    again = sdflow.loads(graph.to_yaml())

    assert again.structure() == graph.structure()
    assert sdflow.loads(again.to_yaml()).to_yaml() == again.to_yaml()


def test_the_example_list_is_not_empty():
    assert EXAMPLES / "txt2img.yaml" in WORKFLOWS


def test_a_graph_built_in_python_loads_back_equal_with_its_inputs():
    graph = sdflow.Graph()
    seed = graph.input("seed", 42, description="noise seed")
    prompt = graph.input("prompt", type="str")
    ckpt = graph.LoadCheckpoint(id="ckpt")
    graph.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    empty = graph.EmptyLatent(id="empty", width=64, height=64)
    schedule = graph.Scheduler(id="schedule", model=ckpt.model, sampler="euler_ancestral", steps=3)
    graph.AddNoise(id="noised", latent=empty, schedule=schedule, seed=seed, strength=0.5)

    loaded = sdflow.loads(graph.to_yaml())

    assert loaded.structure() == graph.structure()
    assert loaded.inputs["prompt"].required and loaded.inputs["seed"].description == "noise seed"
    assert "latent: !link empty\n" in graph.to_yaml() and "seed: !input seed\n" in graph.to_yaml()


def test_a_loaded_graph_changed_in_python_saves_its_change(tmp_path: Path):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["positive"]["text"] = "a green square"
    graph["empty"].set(width=128)

    saved = sdflow.load(graph.save(tmp_path / "changed.yaml"))

    assert saved.nodes["positive"].fields["text"] == "a green square"
    assert saved.nodes["empty"].fields["width"] == 128
    assert saved.structure() == graph.structure()


def test_a_loaded_graph_keeps_its_source_until_changed():
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    assert graph.source == (EXAMPLES / "txt2img.yaml").read_text()

    graph["positive"]["text"] = "a green square"
    assert graph.source is None  # saved images then embed the changed workflow, not the file's text


def test_structure_treats_a_link_to_a_single_output_node_written_either_way_as_equal():
    short = sdflow.loads("nodes:\n  e: {type: EmptyLatent}\n  d: {type: VAEDecode, latent: !link e}\n")
    named = sdflow.loads("nodes:\n  e: {type: EmptyLatent}\n  d: {type: VAEDecode, latent: !link e.latent}\n")

    assert short.nodes["d"].fields["latent"] == Link("e")
    assert short.structure() == named.structure()


def test_a_copy_changes_independently():
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    copy = graph.copy()
    copy["positive"]["text"] = "changed"

    assert graph.nodes["positive"].fields["text"] != "changed"


@pytest.fixture
def picture_node():
    class ReadPicture(Node):
        """Test node with a file path field."""

        outputs: ClassVar[dict[str, type]] = {"image": Image}
        path_fields: ClassVar[tuple[str, ...]] = ("path",)
        path: str = Field(description="a file")

        def run(self, ctx: RunContext) -> dict[str, Any]:
            raise NotImplementedError

    yield ReadPicture
    registry.REGISTERED.pop("ReadPicture")


def test_save_rewrites_relative_file_paths_to_name_the_same_files(tmp_path: Path, picture_node):
    source = tmp_path / "in" / "flow.yaml"
    source.parent.mkdir()
    source.write_text(
        "nodes:\n  pic: {type: ReadPicture, path: photo.png}\n  abs: {type: ReadPicture, path: /x.png}\n"
    )
    graph = sdflow.load(source)

    saved = sdflow.load(graph.save(tmp_path / "out" / "deeper" / "flow.yaml"))

    assert saved.nodes["pic"].fields["path"] == "../../in/photo.png"
    assert saved.nodes["abs"].fields["path"] == "/x.png"
    assert graph.nodes["pic"].fields["path"] == "photo.png"
