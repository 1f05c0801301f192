"""The node library: port types, the Node base, the registry and the built-in nodes."""

from sdflow.nodes.base import Node, RunContext
from sdflow.nodes.registry import all_types, get

__all__ = ["Node", "RunContext", "all_types", "get"]
