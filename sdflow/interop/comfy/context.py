"""What every ComfyUI node handler works with: the conversion state, reading a node's inputs and
writing sdflow nodes, and the Port an output slot becomes."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from sdflow.errors import Location, UserError
from sdflow.formats.comfy_json import ComfyGraph, ComfyNode, Ref
from sdflow.graphs.model import Link, NodeSpec, Workflow


class ConversionError(UserError):
    """The workflow uses nodes or settings sdflow cannot reproduce; ``errors`` holds one per problem,
    printed one per line."""

    def __init__(self, problems: list[str], location: Location) -> None:
        self.errors = [UserError(problem, location) for problem in problems]
        super().__init__(problems[0], location)
        self.args = ("\n".join(str(e) for e in self.errors),)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class Problem(Exception):
    """One reason a node cannot be converted (collected, then reported with the others)."""


@dataclass
class Port:
    """What a ComfyUI output slot is in sdflow: a link, plus settings riding along with it."""

    link: Link
    clip_skip: int = 0  # on a CLIP: layers to skip (CLIPSetLastLayer)
    encoder: str | None = None  # on a latent: the sdflow VAEEncode node that made it
    stopped: bool = False  # on a latent: a KSamplerAdvanced returned it with leftover noise
    unknown: bool = False  # from a node that could not be converted (reported already)


class Converter:
    """The state of one conversion: the sdflow workflow so far and each converted node's Ports."""

    def __init__(self, graph: ComfyGraph, source: str, image_dir: str | None) -> None:
        self.graph, self.source, self.image_dir = graph, source, image_dir
        self.workflow = Workflow(file=None)
        self.notes = list(graph.notes)
        self.ports: dict[str, list[Port]] = {}
        self.replaced: list[str] = []  # sdflow nodes a later one supersedes (SetLatentNoiseMask)
        self.origins: dict[str, str] = {}  # sdflow node id -> the ComfyUI node id it was made from
        self.problems: list[str] = []

    def refuse(self, node: ComfyNode, message: str) -> None:
        """Record one problem of ``node`` and go on: every problem is reported at the end."""
        self.problems.append(f"node {node.id} ({node.type}): {message}")

    # -- reading a ComfyUI node's inputs ------------------------------------------------------

    def const(self, node: ComfyNode, name: str, default: Any = None) -> Any:
        """Input ``name`` as a constant (``default`` when absent); a link there is a Problem."""
        value = node.inputs.get(name, default)
        if isinstance(value, Ref):
            raise Problem(f"input '{name}' comes from node {value.node}; sdflow needs a constant here")
        if value is None:
            raise Problem(f"input '{name}' has no value")
        return value

    def number(self, node: ComfyNode, name: str, default: Any, kind: type) -> Any:
        """Input ``name`` as an int or float; a value that is no number is refused and ``default``
        returned, so that the node's other settings are still checked."""
        value = self.const(node, name, default)
        try:
            return kind(value)
        except (ValueError, TypeError, OverflowError):
            self.refuse(node, f"input '{name}' must be a number, got {value!r}")
            return kind(default)

    def port(self, node: ComfyNode, name: str) -> Port:
        """The Port linked to input ``name``; an unconnected input is a Problem. An input from a
        node that could not be converted gives a Port marked ``unknown`` (no second report)."""
        value = node.inputs.get(name)
        if not isinstance(value, Ref):
            raise Problem(f"input '{name}' is not connected")
        if value.node not in self.ports:
            return Port(Link(f"unconverted_{value.node}", "output"), unknown=True)
        slots = self.ports[value.node]
        if not 0 <= value.slot < len(slots):
            raise Problem(f"input '{name}' uses output {value.slot} of node {value.node}, which has none")
        return slots[value.slot]

    # -- writing sdflow nodes -----------------------------------------------------------------

    def add(self, base: str, comfy_id: str, type_name: str, **fields: Any) -> str:
        """Add an sdflow node with id ``<base>_<comfy id>`` (made unique); returns its id."""
        node_id = f"{base}_{re.sub(r'[^A-Za-z0-9_]', '_', comfy_id)}"
        while node_id in self.workflow.nodes:
            node_id += "_"
        self.workflow.nodes[node_id] = NodeSpec(node_id, type_name, fields)
        self.origins[node_id] = comfy_id
        return node_id

    def image_path(self, name: str) -> str:
        """A LoadImage file name, inside ``--image-dir`` when one was given."""
        if self.image_dir is None:
            return name
        return os.path.join(self.image_dir, name)
