"""What saved images carry: the workflow and inputs as text chunks (the YAML of a Python-built graph
dumped once), and the A1111 generation settings of each output node."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sdflow.graphs.model import Workflow
from sdflow.graphs.yaml_io import dumps
from sdflow.interop.a1111 import Planned, generation
from sdflow.runner.core.family_check import PlannedNode

_YAML: OrderedDict[str, str] = OrderedDict()  # a graph built or changed in Python, dumped once


def text_chunks(workflow: Workflow, values: dict[str, Any]) -> dict[str, str]:
    """Text chunks for saved images: the workflow and the inputs of this run."""
    return {
        "sdflow:workflow": workflow.source if workflow.source is not None else yaml_of(workflow),
        "sdflow:inputs": json.dumps(values, sort_keys=True),
        "sdflow:base": str(workflow.path_base().resolve()),
    }


def yaml_of(workflow: Workflow) -> str:
    """``dumps(workflow)``, remembered for the last few graphs: a pure-Python YAML dump costs ~10 ms,
    which every re-run of an unchanged Python-built graph would pay again."""
    key = repr((workflow.file, workflow.structure()))
    if key not in _YAML:
        _YAML[key] = dumps(workflow)
        if len(_YAML) > 16:
            _YAML.popitem(last=False)
    return _YAML[key]


def generation_settings(steps: Sequence[PlannedNode]) -> dict[str, dict[str, Any] | None]:
    """For each output node of the plan, the A1111 settings of the run it saves (None when the graph
    behind it is not a plain txt2img / img2img)."""
    planned = {s.id: Planned(s.cls.type_name, s.constants, s.links) for s in steps}
    return {s.id: generation(planned, s.id) for s in steps if s.cls.is_output}
