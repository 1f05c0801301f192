"""`sdflow models [KIND]`: what the configured model folders hold, with each file's family, and the
built-ins of that kind (``builtin:NAME``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sdflow.models import folders, resolver
from sdflow.models.describe import describe


def add_command(commands: argparse._SubParsersAction) -> None:
    """Register `sdflow models` on the top-level parser."""
    models = commands.add_parser(
        "models", help="list the models in the configured model folders, with each one's family"
    )
    models.add_argument("kind", nargs="?", choices=list(folders.KINDS), help="one kind only")
    models.set_defaults(handler=_models)


def _models(args: argparse.Namespace) -> int:
    roots = folders.roots()
    if not roots:
        print(
            "no model folders configured: set SDFLOW_MODELS to a ComfyUI or A1111 folder "
            f"(or list model_folders in {folders.config_file()})"
        )
    for kind in [args.kind] if args.kind else list(folders.KINDS):
        if roots:
            _folder_models(kind, roots)
        _builtins(kind)
    return 0


def _folder_models(kind: str, roots: list[Path]) -> None:
    places = folders.kind_folders(kind)
    models = folders.list_models(kind)
    where = ", ".join(str(p) for p in places) or "no such folder under " + ", ".join(map(str, roots))
    print(f"{kind} ({where}):")
    if not models:
        print("  (none)")
    width = max((len(m.name) for m in models), default=0)
    for model in models:
        print(f"  {model.name.ljust(width)}  {describe(kind, model.path)}")


def _builtins(kind: str) -> None:
    """The models of ``kind`` shipped with sdflow, as a workflow names them (``builtin:NAME``)."""
    if kind not in resolver.BUILTIN_KINDS:
        return
    names = [resolver.BUILTIN_PREFIX + name for name in resolver.builtin_names(kind)]
    if not names:
        return
    print(f"{kind} (built into sdflow):")
    width = max(len(name) for name in names)
    for name in names:
        print(f"  {name.ljust(width)}  {describe(kind, resolver.builtin(kind, name))}")
