"""The package's import graph: dependencies point one way (cli -> tools -> runner -> interop -> graphs ->
nodes -> prompts -> models -> formats -> errors/files), with no cycle anywhere, function-level imports
included. A new upward import or a circle fails here, naming the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sdflow"

# Lower numbers are lower layers: a module may import its own layer or lower ones only.
LAYERS = {
    "errors": 0,
    "files": 0,
    "kept": 0,
    "transformers_index": 0,
    "lean": 0,
    "formats": 1,
    "models": 2,
    "prompts": 3,
    "nodes": 4,
    "graphs": 5,
    "interop": 6,
    "runner": 7,
    "api": 8,
    "draw": 9,
    "golden": 9,
    "serve": 9,
    "cli": 10,
}
# Inside a package, its parts in the same way (parts not named here rank with the package's middle).
SUBLAYERS = {
    "nodes": {
        **{
            "types": 0,
            "types_vision": 0,
            "types_grounding": 0,
            "types_sampling": 0,
            "types_upscale": 0,
            "scope": 0,
            "base": 0,
            "fields": 1,
            "model_files": 1,
        },
        **{"ops": 2, "library": 3, "registry": 4},
    },
    "runner": {"devices": 0, "core": 1, "scale": 2},
    "graphs": {
        "model": 0,
        "yaml_io": 1,
        "validate": 1,
        "picture": 2,
        "loading": 3,
        "handles": 3,
        "builder": 4,
    },
    "cli": {"options": 0, "runner_options": 0, "progress": 0, "main": 2},
}
# Known exceptions, each with its reason.
ALLOWED: set[tuple[str, str]] = set()
# Known cycles (sorted module pairs), each with its reason.
ALLOWED_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"}


def _imports(modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(importer, imported module, line) for every import of a package module, wherever it stands."""
    found = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                # `from sdflow.x import y` imports the module sdflow.x.y when there is one
                targets = [
                    f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names
                ]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target in modules and target != name:
                    found.append((name, target, node.lineno))
    return found


def _rank(module: str) -> tuple[int, int]:
    parts = module.split(".")
    if len(parts) == 1:  # sdflow itself re-exports the public API lazily: the top
        return (99, 0)
    top = parts[1]
    inner = SUBLAYERS.get(top, {})
    sub = inner.get(parts[2], max(inner.values(), default=0) // 2 + 1) if len(parts) > 2 else 99
    return (LAYERS[top], sub)


def _edges() -> list[tuple[str, str, int]]:
    return _imports(_modules())


def _private_uses(modules: dict[str, Path]) -> list[str]:
    """Private names used across modules, as far as the syntax tells: ``from sdflow.x import _y``,
    ``module._y`` of an imported module anywhere, and ``obj._y(...)`` on anything but self/cls/super()
    inside the runner (where one executor must not reach into another's parts)."""
    found = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sdflow"):
                for alias in node.names:
                    if _private(alias.name):
                        found.append(f"{name} (line {node.lineno}) imports {node.module}.{alias.name}")
                    elif f"{node.module}.{alias.name}" in modules:
                        imported.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                imported |= {a.asname or a.name for a in node.names if a.name.startswith("sdflow")}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _private(node.attr)):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in imported:
                found.append(f"{name} (line {node.lineno}) uses {owner.id}.{node.attr}")
        if name.startswith("sdflow.runner."):
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                owner, attr = node.func.value, node.func.attr
                own = isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                parent = isinstance(owner, ast.Call) and ast.unparse(owner.func) == "super"
                if not _private(attr) or own or parent:
                    continue
                found.append(f"{name} (line {node.lineno}) calls {ast.unparse(node.func)}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_every_top_level_part_of_the_package_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in _modules() if "." in name}
    assert tops <= set(LAYERS), f"give these a layer in LAYERS: {sorted(tops - set(LAYERS))}"


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for source, target, line in _edges():
        if (source, target) in ALLOWED:
            continue
        same_top = source.split(".")[1:2] == target.split(".")[1:2]
        src, dst = _rank(source), _rank(target)
        higher = dst > src if same_top else dst[0] > src[0]
        if higher and not (same_top and target == ".".join(source.split(".")[:2])):
            upward.append(f"{source} (line {line}) imports {target}")
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = nx.DiGraph((source, target) for source, target, _ in _edges())
    cycles = [
        " -> ".join([*cycle, cycle[0]])
        for cycle in nx.simple_cycles(graph)
        if frozenset(cycle) not in ALLOWED_CYCLES
    ]
    assert cycles == []


def test_no_module_uses_another_modules_private_names() -> None:
    assert _private_uses(_modules()) == []


def test_a_private_import_or_call_would_be_caught(tmp_path: Path) -> None:
    runner = tmp_path / "sdflow" / "runner"
    runner.mkdir(parents=True)
    (runner / "a.py").write_text("from sdflow.runner.b import _step\n\ndef f(r):\n    return r._execute()\n")
    (runner / "b.py").write_text("from sdflow.runner import a\n\nx = a._hidden\n")
    found = _private_uses({"sdflow.runner.a": runner / "a.py", "sdflow.runner.b": runner / "b.py"})
    assert found == [
        "sdflow.runner.a (line 1) imports sdflow.runner.b._step",
        "sdflow.runner.a (line 4) calls r._execute",
        "sdflow.runner.b (line 3) uses a._hidden",
    ]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("sdflow.nodes.base", "sdflow.runner.core.executor"),
        ("sdflow.runner.core.cache", "sdflow.runner.scale.many"),
    ],
)
def test_an_upward_import_would_be_caught(source: str, target: str) -> None:
    src, dst = _rank(source), _rank(target)
    same_top = source.split(".")[1] == target.split(".")[1]
    assert (dst > src) if same_top else (dst[0] > src[0])


MAX_LINES = 400


def test_no_hand_written_module_is_over_400_lines():
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}  # split the module by job (the generated node_calls.pyi is not a .py)
