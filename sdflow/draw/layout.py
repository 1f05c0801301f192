"""The drawing model of a workflow (a Sugiyama-style layered layout, small enough to read):
every node as late as its users allow, long links routed through placeholder points in the layers
they cross, and each layer ordered by its neighbours' mean position to cross fewer links."""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from sdflow.graphs.model import Workflow
from sdflow.nodes import registry

SWEEPS = 6  # barycenter passes, alternating direction: enough for workflows of a few dozen nodes
WAYPOINT = "\0"  # starts the id of a placeholder a long link passes through (no node id can)


@dataclass(frozen=True)
class Edge:
    """A link: from node ``source`` (its output ``output``) into ``target``'s field ``field``,
    passing the ``waypoints`` (placeholders in the layers between) in order."""

    source: str
    target: str
    output: str
    field: str
    waypoints: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.output if self.output == self.field else f"{self.output} → {self.field}"


@dataclass
class Drawing:
    """Node ids (and waypoints) by layer, left to right, each top to bottom; node types; edges;
    and each node's status in a run ("ran" / "cached") when known."""

    layers: list[list[str]]
    types: dict[str, str]
    edges: list[Edge]
    status: dict[str, str] = field(default_factory=dict)

    def nodes(self) -> list[str]:
        """The workflow's nodes (no waypoints), layer by layer."""
        return [n for layer in self.layers for n in layer if not is_waypoint(n)]


def is_waypoint(node: str) -> bool:
    return node.startswith(WAYPOINT)


def drawing(workflow: Workflow, status: dict[str, str] | None = None) -> Drawing:
    """Lay out ``workflow`` (validated first: every link points at an existing node)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    links = []
    for node_id, spec in workflow.nodes.items():
        for field_name, link in spec.links().items():
            links.append((link.node, node_id, _output(workflow, link.node, link.output), field_name))
            graph.add_edge(link.node, node_id)
    level = _levels(graph)
    layers: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node in workflow.nodes:
        layers[level[node]].append(node)
    edges, routed = [], nx.DiGraph(graph)
    for source, target, output, field_name in links:
        waypoints = []
        for layer in range(level[source] + 1, level[target]):
            point = f"{WAYPOINT}{len(routed)}"
            routed.add_edge(waypoints[-1] if waypoints else source, point)
            layers[layer].append(point)
            waypoints.append(point)
        if waypoints:
            routed.add_edge(waypoints[-1], target)
        edges.append(Edge(source, target, output, field_name, tuple(waypoints)))
    _order(layers, routed)
    types = {node_id: spec.type for node_id, spec in workflow.nodes.items()}
    return Drawing(layers, types, edges, dict(status or {}))


def _levels(graph: nx.DiGraph) -> dict[str, int]:
    """Each node's layer: as late as possible (just before its first user), sinks last."""
    level: dict[str, int] = {}
    for node in reversed(list(nx.topological_sort(graph))):
        users = [level[n] for n in graph.successors(node)]
        level[node] = min(users) - 1 if users else 0
    lowest = min(level.values(), default=0)
    return {node: value - lowest for node, value in level.items()}


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
