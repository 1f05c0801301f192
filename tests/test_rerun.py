"""What a re-run still does: a Python-built graph is dumped to YAML (for the saved images' metadata)
once until it changes, not on every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image as PILImage

import sdflow
from sdflow.runner.core import metadata

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def dumps_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = metadata.dumps

    def counted(workflow):
        calls.append(1)
        return real(workflow)

    monkeypatch.setattr(metadata, "dumps", counted)
    monkeypatch.setattr(metadata, "_YAML", type(metadata._YAML)())
    return calls


def _graph() -> sdflow.Graph:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = "builtin:tiny-sd15"  # a changed graph: no source text to embed
    graph["empty"].set(width=32, height=32)
    return graph


def test_re_runs_without_output_nodes_dump_at_most_once(runner, dumps_counted: list[int]) -> None:
    graph = _graph()
    for seed in (1, 2, 1):
        runner.run(graph, inputs={"steps": 1, "seed": seed}, outputs=["decoded"])

    assert len(dumps_counted) <= 1


def test_a_changed_graph_is_dumped_once_until_it_changes_again(runner, dumps_counted: list[int]) -> None:
    graph = _graph()
    runner.run(graph, inputs={"steps": 1})
    runner.run(graph, inputs={"steps": 1})
    assert len(dumps_counted) == 1

    graph["positive"]["text"] = "a green square"
    result = runner.run(graph, inputs={"steps": 1})

    assert len(dumps_counted) == 2
    with PILImage.open(result.files[0]) as saved:
        assert "a green square" in saved.text["sdflow:workflow"]
