"""`sdflow models [KIND]`: what the configured model folders hold, with each file's family."""

from __future__ import annotations

import argparse

from sdflow.models import folders
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
        return 0
    for kind in [args.kind] if args.kind else list(folders.KINDS):
        places = folders.kind_folders(kind)
        models = folders.list_models(kind)
        where = ", ".join(str(p) for p in places) or "no such folder under " + ", ".join(map(str, roots))
        print(f"{kind} ({where}):")
        if not models:
            print("  (none)")
        width = max((len(m.name) for m in models), default=0)
        for model in models:
            print(f"  {model.name.ljust(width)}  {describe(kind, model.path)}")
    return 0
