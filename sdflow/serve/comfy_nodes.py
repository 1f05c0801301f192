"""``GET /object_info`` for the ComfyUI node types sdflow imports, learnt from the importer itself:
each handler of the registry runs once on a probe that records the inputs it reads (a link with
``port``, a setting with ``const``/``number``, and its default), and the sdflow nodes it writes tell
the types: a linked input has the type of the sdflow field it lands in, an output the type of the
sdflow output it points to (``UpscaleModel`` is ComfyUI's ``UPSCALE_MODEL``)."""

from __future__ import annotations

import contextlib
import functools
import re
from typing import Any

from sdflow.formats.comfy_json import ComfyGraph, ComfyNode
from sdflow.graphs.model import Link
from sdflow.interop.comfy import HANDLERS, Converter, Port, load_handlers
from sdflow.interop.comfy.registry import CONTROL, WIDGETS
from sdflow.nodes import registry
from sdflow.nodes.fields import fields_of, literal_choices

PROBE = "\0probe:"
_KINDS = {bool: "BOOLEAN", int: "INT", float: "FLOAT", str: "STRING"}


def comfy_type(kind: type) -> str:
    """ComfyUI's name for an sdflow port type: ``ControlNet`` -> ``CONTROL_NET``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", kind.__name__).upper()


class _Probe(Converter):
    """A Converter that answers every read with a stand-in and records what was read; with
    ``unknown``, links come as from a node that could not be converted (handlers pass them on)."""

    def __init__(self, unknown: bool = False) -> None:
        super().__init__(ComfyGraph({}, "api"), "<object_info>", None)
        self.unknown = unknown
        self.links: dict[str, str] = {}  # input name -> ComfyUI type ("*" until a field tells)
        self.settings: dict[str, tuple[str, Any]] = {}  # input name -> (ComfyUI type, default)

    def port(self, node: ComfyNode, name: str) -> Port:
        self.links.setdefault(name, "*")
        return Port(Link(PROBE + name, "output"), unknown=self.unknown)

    def const(self, node: ComfyNode, name: str, default: Any = None) -> Any:
        kind = _KINDS.get(type(default), "STRING")
        self.settings.setdefault(name, (kind, default))
        return default if default is not None else PROBE + name

    def number(self, node: ComfyNode, name: str, default: Any, kind: type) -> Any:
        self.settings[name] = (_KINDS.get(kind, "FLOAT"), kind(default))
        return kind(default)

    def learn_types(self) -> None:
        """Type each recorded input by the sdflow field its stand-in landed in."""
        for spec in self.workflow.nodes.values():
            cls = registry.get(spec.type)
            if cls is None:
                continue
            fields = fields_of(cls)
            for field_name, value in spec.fields.items():
                for item in value if isinstance(value, list) else [value]:
                    self._learn(item, fields.get(field_name))

    def _learn(self, value: Any, field: Any) -> None:
        if field is None:
            return
        if isinstance(value, Link) and value.node.startswith(PROBE):
            name = value.node.removeprefix(PROBE)
            kinds = [t for t in field.accepted if isinstance(t, type)]
            if kinds and self.links.get(name) == "*":
                self.links[name] = comfy_type(kinds[0])
        elif isinstance(value, str) and value.startswith(PROBE):
            name = value.removeprefix(PROBE)
            choices = literal_choices(field.annotation)
            if choices and name in self.settings:
                self.settings[name] = ([list(choices)], None)  # type: ignore[assignment]

    def output_type(self, port: Port) -> str:
        link = port.link
        if link.node.startswith(PROBE):  # passed on: the input's type (its name until known)
            name = link.node.removeprefix(PROBE)
            return self.links[name] if self.links.get(name, "*") != "*" else link.node
        spec = self.workflow.nodes.get(link.node)
        cls = registry.get(spec.type) if spec is not None else None
        if cls is None or link.output not in cls.outputs:
            return "*"
        return comfy_type(cls.outputs[link.output])


def _widget_order(type_name: str, names: list[str]) -> list[str]:
    """Inputs in the UI's widget order where the registry knows it, the others after."""
    widgets = [name for name in WIDGETS.get(type_name, ()) if name != CONTROL and name in names]
    return widgets + [name for name in names if name not in widgets]


def _probed(type_name: str) -> tuple[_Probe, list[Port]]:
    """The probe after running the handler, and the Ports it returned. A handler that refuses the
    stand-ins runs again on links from unconverted nodes, which handlers pass on."""
    for unknown in (False, True):
        probe = _Probe(unknown)
        try:
            ports = HANDLERS[type_name](probe, ComfyNode("probe", type_name)) or []
        except Exception:  # a handler that needs real values: what it read until then is still known
            continue
        probe.learn_types()
        return probe, ports
    probe = _Probe()
    with contextlib.suppress(Exception):
        HANDLERS[type_name](probe, ComfyNode("probe", type_name))
    probe.learn_types()
    return probe, []


def node_info(type_name: str) -> dict[str, Any]:
    """One entry of /object_info, as ComfyUI's node_info shapes it ("*" where no field tells)."""
    handler = HANDLERS[type_name]
    probe, ports = _probed(type_name)
    required: dict[str, Any] = {name: [kind] for name, kind in probe.links.items()}
    optional: dict[str, Any] = {}
    for name in _widget_order(type_name, list(probe.settings)):
        kind, default = probe.settings[name]
        if default is None:
            required[name] = [kind] if isinstance(kind, list) else [kind, {}]
        else:
            optional[name] = [kind, {"default": default}]
    outputs = [probe.output_type(port) for port in ports]
    is_output = any(
        (cls := registry.get(spec.type)) is not None and cls.is_output
        for spec in probe.workflow.nodes.values()
    )
    inputs = {"required": required, "optional": optional}
    return {
        "input": inputs,
        "input_order": {part: list(names) for part, names in inputs.items()},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "name": type_name,
        "display_name": type_name,
        "description": (handler.__doc__ or "").strip(),
        "python_module": "sdflow",
        "category": "sdflow",
        "output_node": is_output,
    }


def _named_like_elsewhere(info: dict[str, Any]) -> None:
    """Type a link input no field typed (one a handler passes on) as the same-named input of the
    other node types is typed, and an output that passes an input on as that input."""
    seen: dict[str, set[str]] = {}
    for entry in info.values():
        for name, spec in entry["input"]["required"].items():
            if spec[0] != "*" and isinstance(spec[0], str) and len(spec) == 1:
                seen.setdefault(name, set()).add(spec[0])
    for entry in info.values():
        required = entry["input"]["required"]
        for name, spec in required.items():
            if spec == ["*"] and len(seen.get(name, ())) == 1:
                required[name] = [next(iter(seen[name]))]
        entry["output"] = [
            required.get(kind.removeprefix(PROBE), ["*"])[0] if kind.startswith(PROBE) else kind
            for kind in entry["output"]
        ]
        entry["output_name"] = entry["output"]


@functools.cache
def object_info() -> dict[str, Any]:
    """Every ComfyUI node type sdflow's importer maps, by name."""
    load_handlers()
    info = {name: node_info(name) for name in sorted(HANDLERS)}
    _named_like_elsewhere(info)
    return info
