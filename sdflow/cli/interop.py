"""`sdflow import comfy FILE -o workflow.yaml`: convert a ComfyUI workflow to an sdflow workflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sdflow.cli.options import EXIT_OK
from sdflow.errors import Location, UserError


def add_commands(commands: Any) -> None:
    """Register `import comfy` on the `sdflow` subcommand parser."""
    importer = commands.add_parser("import", help="convert a workflow from another tool")
    sources = importer.add_subparsers(dest="import_source", required=True)
    comfy = sources.add_parser(
        "comfy", help="a ComfyUI workflow (API or UI format .json, or a ComfyUI PNG) to sdflow YAML"
    )
    comfy.add_argument("file", help="ComfyUI .json (API or UI format) or a PNG ComfyUI saved")
    comfy.add_argument("-o", "--output", required=True, metavar="WORKFLOW.yaml")
    comfy.add_argument(
        "--image-dir",
        metavar="DIR",
        help="folder holding the LoadImage files (ComfyUI's input folder); default: beside the YAML",
    )
    comfy.set_defaults(handler=_import_comfy)


def _import_comfy(args: argparse.Namespace) -> int:
    from sdflow.files import write_new_path
    from sdflow.formats.comfy_json import read
    from sdflow.graphs.validate import validate
    from sdflow.graphs.yaml_io import dumps, loads
    from sdflow.interop.comfy import ConversionError, convert, relative_image_dir

    graph = read(args.file)
    conversion = convert(graph, args.file, relative_image_dir(args.image_dir, args.output))
    text = header(args.file, graph.format) + dumps(conversion.workflow)
    try:  # what we write must load and validate as it is
        validate(loads(text, args.output))
    except UserError as exc:
        # the YAML's lines mean nothing to the user (it is not written): name the node and field
        errors = getattr(exc, "errors", [exc])
        problems = [f"{Location(node=e.location.node, field=e.location.field)}: {e.message}" for e in errors]
        title = "the converted workflow does not validate (nothing written):"
        raise ConversionError([title, *problems], Location(args.file)) from None
    try:
        written = write_new_path(args.output, text.encode())
    except OSError as exc:
        raise UserError(f"cannot write the workflow: {exc}", Location(field="--output")) from None
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    print(written)
    return EXIT_OK


def header(source: str, kind: str) -> str:
    """The comment the written YAML starts with."""
    return (
        f"# Imported by `sdflow import comfy` from the ComfyUI {kind}-format workflow {Path(source).name}.\n"
        "# Relative paths (LoadImage) are relative to this file's folder.\n"
    )
