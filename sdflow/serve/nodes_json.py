"""The registered node types as JSON: what `sdflow nodes` prints, typed."""

from __future__ import annotations

import json
from typing import Any

from sdflow.nodes import registry
from sdflow.nodes.fields import fields_of, type_label


def _plain(value: Any) -> Any:
    """``value`` when JSON can hold it, else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def node_types() -> list[dict[str, Any]]:
    """Each node type: name, version, summary, input fields and output types."""
    types = []
    for name, cls in registry.all_types().items():
        fields = []
        for field_name, spec in fields_of(cls).items():
            fields.append(
                {
                    "name": field_name,
                    "type": type_label(spec.annotation),
                    "link": spec.is_port,
                    "required": spec.required,
                    "default": None if spec.required or spec.is_port else _plain(spec.default),
                    "constraints": spec.constraints() or None,
                    "description": spec.description or None,
                }
            )
        outputs = {out: kind.__name__ for out, kind in cls.outputs.items()}
        types.append(
            {
                "type": name,
                "version": cls.version,
                "summary": cls.summary(),
                "inputs": fields,
                "outputs": outputs,
            }
        )
    return types
