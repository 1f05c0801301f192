"""Reading ComfyUI workflows — API format, UI format, or the chunks of a ComfyUI PNG — into one
neutral form: nodes with constant inputs and references to other nodes' output slots.

The UI format stores widget values by position (``widgets_values``) and links in a separate table;
Reroute nodes pass a link through and Primitive nodes hold a constant. Links, Reroutes and
Primitives are resolved here; the positional widget values are kept as they are (``widgets``), for
the converter to name by each node type's widget list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdflow.errors import Location, UserError

# Nodes that only hold a constant: the UI's PrimitiveNode and the backend's Primitive* nodes.
PRIMITIVES = ("PrimitiveInt", "PrimitiveFloat", "PrimitiveString", "PrimitiveStringMultiline")
PRIMITIVES += ("PrimitiveBoolean",)
COMMENTS = ("Note", "MarkdownNote")  # UI-only annotations, never executed
MUTED, BYPASSED = 2, 4  # the UI's node modes


@dataclass(frozen=True)
class Ref:
    """An input fed by output ``slot`` of ComfyUI node ``node``."""

    node: str
    slot: int


@dataclass
class ComfyNode:
    """One ComfyUI node: id, class, inputs (constants or Refs), its title if the UI gave one, and the
    UI format's positional ``widgets_values`` (not yet named)."""

    id: str
    type: str
    inputs: dict[str, Any] = field(default_factory=dict)
    title: str | None = None
    widgets: list[Any] | None = None


@dataclass
class ComfyGraph:
    """A ComfyUI workflow in neutral form, with notes on what reading it dropped."""

    nodes: dict[str, ComfyNode]
    format: str  # "api" or "ui"
    notes: list[str] = field(default_factory=list)


def read(path: str | Path) -> ComfyGraph:
    """A ComfyUI workflow from a .json file (either format) or a PNG ComfyUI saved."""
    from sdflow.formats.png import is_png, text_chunks

    where = Location(str(path))
    if is_png(path):
        chunks = text_chunks(path)
        # The API-format "prompt" is what ComfyUI executed: widgets and primitives already resolved.
        for key in ("prompt", "workflow"):
            if key in chunks:
                return parse(_json(chunks[key], where, f"the '{key}' text"), where)
        hint = ""
        if "sdflow:workflow" in chunks:
            hint = " (it holds an sdflow workflow: run it with `sdflow run`)"
        elif "parameters" in chunks:  # A1111's
            hint = (
                " (it holds A1111 generation parameters: import them with "
                f"`sdflow import a1111 {path} -o WORKFLOW.yaml`)"
            )
        raise UserError(f"this PNG holds no ComfyUI workflow ('prompt' or 'workflow' text){hint}", where)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("file not found", where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the file: {exc}", where) from None
    return parse(_json(text, where, "the file"), where)


def parse(document: Any, where: Location) -> ComfyGraph:
    """A parsed JSON document in either ComfyUI format."""
    try:
        return _parse(document, where)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        # a hand-edited or truncated file: a field of the wrong shape somewhere
        raise UserError(f"malformed ComfyUI workflow ({type(exc).__name__}: {exc})", where) from None


def _parse(document: Any, where: Location) -> ComfyGraph:
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        return _ui(document, where)
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        document = document["prompt"]  # the body of a POST /prompt request
    if (
        isinstance(document, dict)
        and document
        and all(isinstance(v, dict) and "class_type" in v for v in document.values())
    ):
        return _api(document)
    raise UserError(
        "not a ComfyUI workflow: expected the API format ({id: {class_type, inputs}}) or the UI "
        "format ({nodes: [...], links: [...]})",
        where,
    )


def _json(text: str, where: Location, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not JSON: {exc}", where) from None


# -- API format ---------------------------------------------------------------------------------


def _api(document: dict[str, Any]) -> ComfyGraph:
    nodes = {}
    for node_id, entry in document.items():
        inputs = {}
        for name, value in (entry.get("inputs") or {}).items():
            is_link = isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)
            inputs[name] = Ref(str(value[0]), value[1]) if is_link else value
        title = (entry.get("_meta") or {}).get("title")
        nodes[str(node_id)] = ComfyNode(str(node_id), str(entry["class_type"]), inputs, title)
    graph = ComfyGraph(nodes, "api")
    _inline_primitives(graph)
    return graph


def _inline_primitives(graph: ComfyGraph) -> None:
    """Replace references to Primitive* nodes by their value, and drop those nodes."""
    constants = {
        nid: node.inputs.get("value") for nid, node in graph.nodes.items() if node.type in PRIMITIVES
    }
    for node in graph.nodes.values():
        for name, value in node.inputs.items():
            if isinstance(value, Ref) and value.node in constants:
                node.inputs[name] = constants[value.node]
    for nid in constants:
        del graph.nodes[nid]


# -- UI format ----------------------------------------------------------------------------------


def _ui(document: dict[str, Any], where: Location) -> ComfyGraph:
    raw = {str(n["id"]): n for n in document["nodes"] if isinstance(n, dict) and "id" in n}
    links = {}
    for entry in document.get("links") or []:
        if isinstance(entry, dict):
            entry = [entry.get(k) for k in ("id", "origin_id", "origin_slot", "target_id", "target_slot")]
        links[entry[0]] = (str(entry[1]), int(entry[2]))
    graph = ComfyGraph({}, "ui")
    subgraphs = {
        str(sub.get("id")): str(sub.get("name", "?"))
        for sub in (document.get("definitions") or {}).get("subgraphs") or []
        if isinstance(sub, dict)
    }
    for node_id, node in raw.items():
        kind = str(node.get("type", "?"))
        if kind in subgraphs:  # its type is the subgraph's id: name it for the message
            kind = f"subgraph '{subgraphs[kind]}'"
        if kind in COMMENTS or kind in ("Reroute", "PrimitiveNode"):
            continue
        if node.get("mode") == MUTED:
            graph.notes.append(f"node {node_id} ({kind}) is muted in ComfyUI: left out")
            continue
        if node.get("mode") == BYPASSED:
            kind = f"{kind} (bypassed)"
        values = node.get("widgets_values")
        inputs = dict(values) if isinstance(values, dict) else {}  # some nodes store widgets by name
        widgets = list(values) if isinstance(values, list) else None
        for slot in node.get("inputs") or []:
            link = slot.get("link")
            if link is None:
                continue
            if link not in links:
                raise UserError(
                    f"node {node_id} ({kind}): input '{slot.get('name')}' uses unknown link {link}", where
                )
            inputs[slot["name"]] = _source(links[link], raw, links, where)
        graph.nodes[node_id] = ComfyNode(node_id, kind, inputs, node.get("title"), widgets)
    _inline_primitives(graph)
    return graph


def _source(
    origin: tuple[str, int], raw: dict[str, Any], links: dict[Any, tuple[str, int]], where: Location
) -> Any:
    """What a link delivers: a Ref, or the constant of a Primitive node; Reroutes are followed."""
    seen = set()
    node_id, slot = origin
    while True:
        node = raw.get(node_id)
        if node is None:
            raise UserError(f"a link comes from node {node_id}, which the workflow lacks", where)
        if node.get("type") == "PrimitiveNode":
            values = node.get("widgets_values") or [None]
            return values[0]
        if node.get("type") != "Reroute":
            return Ref(node_id, slot)
        if node_id in seen:
            raise UserError(f"Reroute node {node_id} is part of a loop", where)
        seen.add(node_id)
        upstream = next((s.get("link") for s in node.get("inputs") or [] if s.get("link") is not None), None)
        if upstream is None or upstream not in links:
            raise UserError(f"Reroute node {node_id} has no input", where)
        node_id, slot = links[upstream]
