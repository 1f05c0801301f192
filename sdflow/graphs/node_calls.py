"""Graph's node methods, as editors see them.

At run time a Graph finds node types in the registry (``Graph.__getattr__``), so a new node class
works at once. Type checkers and editors read ``node_calls.pyi`` instead: one typed method per node
type, generated from the registry by ``tools/gen_stubs.py`` (a test fails when it is out of date).
"""


class NodeCalls:
    """Base of Graph that carries the typed node methods in ``node_calls.pyi``."""
