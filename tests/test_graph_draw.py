"""`sdflow graph`: a workflow's DAG as Mermaid text or SVG, coloured from a run report."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sdflow.cli import main
from sdflow.draw.layout import drawing, is_waypoint
from sdflow.draw.mermaid import to_mermaid
from sdflow.draw.svg import to_svg
from sdflow.graphs.loading import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SVG = "{http://www.w3.org/2000/svg}"


def sdflow_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_link_goes_from_an_earlier_layer_to_a_later_one_through_one_waypoint_per_layer():
    picture = drawing(load(EXAMPLES / "hires_fix.yaml"))
    layer_of = {node: i for i, layer in enumerate(picture.layers) for node in layer}
    assert sorted(picture.nodes()) == sorted(load(EXAMPLES / "hires_fix.yaml").nodes)
    for edge in picture.edges:
        path = [edge.source, *edge.waypoints, edge.target]
        assert [layer_of[n] for n in path] == list(range(layer_of[edge.source], layer_of[edge.target] + 1))
        assert all(is_waypoint(w) for w in edge.waypoints)
    assert layer_of["empty"] == layer_of["noised"] - 1  # a source sits just before its user
    assert layer_of["save"] == len(picture.layers) - 1


def test_mermaid_has_a_box_per_node_and_a_labelled_arrow_per_link():
    workflow = load(EXAMPLES / "txt2img.yaml")
    text = to_mermaid(drawing(workflow, {"ckpt": "cached", "save": "ran"}))
    assert text.startswith("flowchart LR\n")
    boxes = dict(re.findall(r'^  (n\d+)\["([^<]+)<br/>', text, re.MULTILINE))
    assert sorted(boxes.values()) == sorted(workflow.nodes)
    ids = {node: name for name, node in boxes.items()}
    assert f'  {ids["ckpt"]} -- "clip" --> {ids["positive"]}' in text
    assert f'  {ids["positive"]} -- "conditioning → positive" --> {ids["denoised"]}' in text
    assert f'  {ids["empty"]} -- "latent" --> {ids["noised"]}' in text  # `!link empty.latent`
    assert text.count(" --> ") == sum(len(s.links()) for s in workflow.nodes.values())
    assert f"  class {ids['save']} ran" in text and f"  class {ids['ckpt']} cached" in text


def test_the_command_colours_the_svg_from_a_run_report(tmp_path, capsys):
    report = tmp_path / "report.json"
    code, _, err = sdflow_cli(
        "run", str(EXAMPLES / "txt2img.yaml"), "--set", "steps=2", "--sweep", "seed=1,2", "--quiet",
        "--output-dir", str(tmp_path / "out"), "--report", str(report), capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    code, out, err = sdflow_cli(
        "graph", str(EXAMPLES / "txt2img.yaml"), "-o", str(tmp_path / "g.svg"), "--report", str(report),
        capsys=capsys,
    )  # fmt: skip
    assert code == 0, err
    fills = node_fills(out.strip())
    assert len(fills) == 9
    assert fills["ckpt"] == fills["positive"] == "#d3f9d8"  # cached in the second run
    assert fills["noised"] == fills["save"] == "#ffe8cc"  # the seed changed: ran
    labels = [t.text for t in ET.parse(out.strip()).getroot().iter(f"{SVG}text")]
    assert labels.count("clip") == 2 and "conditioning → negative" in labels
    code, out, _ = sdflow_cli(
        "graph", str(EXAMPLES / "txt2img.yaml"), "-o", str(tmp_path / "g.svg"), "--report", str(report),
        "--run", "0", capsys=capsys,
    )  # fmt: skip
    assert code == 0 and out.strip() != str(tmp_path / "g.svg")  # never overwritten
    assert set(node_fills(out.strip()).values()) == {"#ffe8cc"}  # the first run ran everything


def test_the_drawing_in_the_docs_is_the_current_one():
    """README shows docs/graph_txt2img.svg: `sdflow graph examples/txt2img.yaml -o docs/graph_txt2img.svg`."""
    drawn = to_svg(drawing(load(EXAMPLES / "txt2img.yaml")))
    assert (EXAMPLES.parent / "docs" / "graph_txt2img.svg").read_text() == drawn


def node_fills(path: str) -> dict[str, str]:
    """Node id -> fill colour of its box in an SVG drawing."""
    fills = {}
    for group in ET.parse(path).getroot().iter(f"{SVG}g"):
        node = group.find(f"{SVG}title").text.split(":")[0]
        fills[node] = group.find(f"{SVG}rect").get("fill")
    return fills


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-o", "g.png"], "the output must end in .svg or .mmd"),
        (["-o", "g.svg", "--report", "missing.json"], "report file not found"),
        (["-o", "g.svg", "--report", "bad.json"], "not a `sdflow run --report` file"),
        (["-o", "g.svg", "--report", "empty.json", "--run", "3"], "the report has no run 3 (it has 0)"),
    ],
)
def test_mistakes_are_exit_2_with_a_message(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    Path("bad.json").write_text(json.dumps({"runs": [{"nodes": [{"name": "x"}]}]}))
    Path("empty.json").write_text(json.dumps({"runs": []}))
    code, _, err = sdflow_cli("graph", str(EXAMPLES / "txt2img.yaml"), *argv, capsys=capsys)
    assert code == 2 and expected in err
