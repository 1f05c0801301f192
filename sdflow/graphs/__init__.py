"""The workflow model: loading YAML with locations, validation, and the Python builder."""

from sdflow.graphs.loading import load
from sdflow.graphs.model import InputRef, InputSpec, Link, NodeSpec, Workflow
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps, loads

__all__ = [
    "InputRef",
    "InputSpec",
    "Link",
    "NodeSpec",
    "Workflow",
    "dumps",
    "load",
    "loads",
    "validate",
]
