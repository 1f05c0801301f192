"""The drawing model of a workflow: nodes in layers (topological generations), ordered within each
layer to cross fewer edges, and labelled edges."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from sdflow.graphs.model import Workflow
from sdflow.nodes import registry

SWEEPS = 4  # barycenter passes (down, up, down, up): enough for workflows of a few dozen nodes


@dataclass(frozen=True)
class Edge:
    """A link: from node ``source`` (its output ``output``) into ``target``'s field ``field``."""

    source: str
    target: str
    output: str
    field: str

    @property
    def label(self) -> str:
        return self.output if self.output == self.field else f"{self.output} → {self.field}"


@dataclass
class Drawing:
    """Node ids by layer (left to right, each top to bottom), their types, edges and run status."""

    layers: list[list[str]]
    types: dict[str, str]
    edges: list[Edge]
    status: dict[str, str] = field(default_factory=dict)  # node id -> "ran" | "cached"


def drawing(workflow: Workflow, status: dict[str, str] | None = None) -> Drawing:
    """Lay out ``workflow`` (it should have been validated: links point at existing nodes)."""
    edges = []
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for node_id, spec in workflow.nodes.items():
        for field_name, link in spec.links().items():
            edges.append(Edge(link.node, node_id, _output(workflow, link.node, link.output), field_name))
            graph.add_edge(link.node, node_id)
    layers = _layers(graph, list(workflow.nodes))
    _order(layers, graph)
    types = {node_id: spec.type for node_id, spec in workflow.nodes.items()}
    return Drawing(layers, types, edges, dict(status or {}))


def _layers(graph: nx.DiGraph, written: list[str]) -> list[list[str]]:
    """Topological generations, with each source node moved right to just before its first user
    (an EmptyLatent sits beside the AddNoise it feeds, not beside the checkpoint)."""
    level = {n: i for i, layer in enumerate(nx.topological_generations(graph)) for n in layer}
    for node in graph:
        users = [level[n] for n in graph.successors(node)]
        if graph.in_degree(node) == 0 and users:
            level[node] = min(users) - 1
    layers: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in written:
        layers[level[node]].append(node)
    return [layer for layer in layers if layer]


def _output(workflow: Workflow, node_id: str, output: str | None) -> str:
    if output is not None:
        return output
    cls = registry.get(workflow.nodes[node_id].type)
    return next(iter(cls.outputs)) if cls is not None and cls.outputs else "?"


def _order(layers: list[list[str]], graph: nx.DiGraph) -> None:
    """Reorder each layer by the mean position of its neighbours in the layer before (or after)."""
    for sweep in range(SWEEPS):
        downward = sweep % 2 == 0
        sequence = range(1, len(layers)) if downward else range(len(layers) - 2, -1, -1)
        for index in sequence:
            fixed = layers[index - 1] if downward else layers[index + 1]
            layers[index] = _by_barycenter(layers[index], fixed, graph, downward)


def _by_barycenter(layer: list[str], fixed: list[str], graph: nx.DiGraph, downward: bool) -> list[str]:
    position = {node: i for i, node in enumerate(fixed)}
    keys = {}
    for rank, node in enumerate(layer):
        near = graph.predecessors(node) if downward else graph.successors(node)
        places = [position[n] for n in near if n in position]
        keys[node] = sum(places) / len(places) if places else float(rank)
    return sorted(layer, key=lambda node: keys[node])
