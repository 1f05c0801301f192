"""ComfyUI workflows to sdflow workflows: the conversion loop over the graph.

Each supported ComfyUI node becomes one or more sdflow nodes, made by its handler (``handlers_*``
modules; a KSampler is a Scheduler, an AddNoise and a DenoiseLoop). Values that are no node of their
own in sdflow travel with the link (see Port). Anything that cannot be converted faithfully is
gathered and reported together.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx

from sdflow.errors import Location
from sdflow.formats.comfy_json import ComfyGraph, ComfyNode, Ref
from sdflow.graphs.model import InputRef, InputSpec, Link, NodeSpec, Workflow
from sdflow.interop.comfy.context import ConversionError, Converter, Problem
from sdflow.interop.comfy.registry import HANDLERS, load_handlers, named_widgets

# How the UI format names what ComfyUI flattens only in the API format: subgraphs (named by the reader)
# and group nodes, saved as `workflow>NAME` by older frontends and `workflow/NAME` by newer ones.
GROUPS = ("subgraph ", "workflow>", "workflow/")


@dataclass
class Conversion:
    """The converted workflow, notes on what was approximated or left out, and the ComfyUI node
    each sdflow node was made from (``origins``: sdflow id -> ComfyUI id)."""

    workflow: Workflow
    notes: list[str] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)


def convert(graph: ComfyGraph, source: str, image_dir: str | None = None) -> Conversion:
    """The sdflow workflow for a ComfyUI graph; ``image_dir`` prefixes LoadImage file names."""
    load_handlers()
    c = Converter(graph, source, image_dir)
    problems = unsupported(graph)
    for node in _order(graph, source):
        if node.type not in HANDLERS:
            continue  # reported above; the nodes it feeds still have their own settings checked
        try:
            c.ports[node.id] = HANDLERS[node.type](c, named_widgets(c, node))
        except Problem as exc:
            c.refuse(node, str(exc))
        except (ValueError, TypeError) as exc:  # e.g. int("abc") on a hand-edited file
            c.refuse(node, f"invalid value: {exc}")
    problems += c.problems
    if problems:
        raise ConversionError(problems, Location(source))
    used = {link.node for spec in c.workflow.nodes.values() for link in spec.links().values()}
    for node_id in c.replaced:
        if node_id not in used:
            del c.workflow.nodes[node_id]
    promote_inputs(c.workflow)
    origins = {node_id: comfy for node_id, comfy in c.origins.items() if node_id in c.workflow.nodes}
    return Conversion(c.workflow, c.notes, origins)


def unsupported(graph: ComfyGraph) -> list[str]:
    """One line per node type sdflow does not import, with its node ids (and a hint for groups)."""
    found: dict[str, list[str]] = {}
    for node in graph.nodes.values():
        if node.type not in HANDLERS:
            found.setdefault(node.type, []).append(node.id)
    lines = [
        f"unsupported ComfyUI node {kind} (node{'s' if len(ids) > 1 else ''} {', '.join(ids)})"
        for kind, ids in sorted(found.items())
    ]
    if graph.format == "ui" and any(kind.startswith(GROUPS) for kind in found):
        lines.append("subgraphs and group nodes: export the API format, where ComfyUI flattens them")
    return lines


def _order(graph: ComfyGraph, source: str) -> list[ComfyNode]:
    dag = nx.DiGraph()
    for node in graph.nodes.values():
        dag.add_node(node.id)
        for value in node.inputs.values():
            if isinstance(value, Ref):
                dag.add_edge(value.node, node.id)
    missing = [n for n in dag if n not in graph.nodes]
    if missing:
        raise ConversionError(
            [f"links come from nodes the workflow lacks: {', '.join(missing)}"], Location(source)
        )
    if not nx.is_directed_acyclic_graph(dag):
        raise ConversionError(["the workflow's links form a loop"], Location(source))
    return [graph.nodes[n] for n in nx.lexicographical_topological_sort(dag, key=_natural)]


# The node types holding a seed (and its field), and those guided by a positive and a negative.
SEEDED = {"AddNoise": "seed", "RandomNoise": "noise_seed", "SamplerCustom": "noise_seed"}
GUIDED = ("DenoiseLoop", "SamplerCustom", "CFGGuider")


def promote_inputs(workflow: Workflow) -> None:
    """Make the values people change most workflow inputs, for `--set`: each sampler's seed
    (``seed``, or ``seed_<node>`` with several samplers) and, with one sampler or guider, its prompts."""
    noises = [spec for spec in workflow.nodes.values() if spec.type in SEEDED]
    for spec in noises:
        name = "seed" if len(noises) == 1 else f"seed_{spec.id.removeprefix('noise_')}"
        _promote(workflow, spec, SEEDED[spec.type], name, "int")
    loops = [spec for spec in workflow.nodes.values() if spec.type in GUIDED]
    if len(loops) == 1:
        positive, negative = (_prompt_node(workflow, loops[0].fields[f], f) for f in ("positive", "negative"))
        _promote(workflow, workflow.nodes[positive], "text", "prompt", "str")
        if negative != positive:
            _promote(workflow, workflow.nodes[negative], "text", "negative", "str")


def _prompt_node(workflow: Workflow, link: Link, side: str) -> str:
    """The node a loop's conditioning comes from, through any ApplyControlNet nodes on that side."""
    while workflow.nodes[link.node].type == "ApplyControlNet":
        link = workflow.nodes[link.node].fields[side]
    return link.node


def _promote(workflow: Workflow, spec: NodeSpec, field_name: str, name: str, kind: str) -> None:
    if field_name in spec.fields and not isinstance(spec.fields[field_name], InputRef):
        workflow.inputs[name] = InputSpec(name, kind, spec.fields[field_name])
        spec.fields[field_name] = InputRef(name)


def _natural(node_id: str) -> str:
    """Sort key putting ComfyUI's numeric ids in numeric order ("9" before "10")."""
    return re.sub(r"\d+", lambda m: m.group().zfill(12), node_id)


def relative_image_dir(image_dir: str | None, output: str | Path | None) -> str | None:
    """``image_dir`` as a path relative to the folder the YAML is written to (absolute stays)."""
    if image_dir is None or Path(image_dir).is_absolute() or output is None:
        return image_dir
    return os.path.relpath(Path(image_dir).resolve(), Path(output).resolve().parent)
