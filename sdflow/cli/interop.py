"""`sdflow import comfy FILE -o workflow.yaml` and `sdflow import a1111 PICTURE.png -o workflow.yaml`:
convert a ComfyUI workflow, or the run A1111's parameters describe, to an sdflow workflow."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sdflow.cli.options import EXIT_OK
from sdflow.errors import Location, UserError, WorkflowErrors


def add_commands(commands: Any) -> None:
    """Register `import comfy` and `import a1111` on the `sdflow` subcommand parser."""
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
    a1111 = sources.add_parser(
        "a1111", help="the run A1111's generation parameters describe (a PNG A1111 saved, or its text)"
    )
    a1111.add_argument("file", help="a PNG with A1111's 'parameters' text, or a text file holding it")
    a1111.add_argument("-o", "--output", required=True, metavar="WORKFLOW.yaml")
    a1111.add_argument("--init-image", metavar="PICTURE", help="the init picture of an img2img run")
    a1111.add_argument(
        "--checkpoint", metavar="NAME", help="the checkpoint to use instead of the parameters' Model"
    )
    a1111.set_defaults(handler=_import_a1111)


def _import_comfy(args: argparse.Namespace) -> int:
    from sdflow.formats.comfy_json import read
    from sdflow.interop.comfy import convert, relative_image_dir

    graph = read(args.file)
    conversion = convert(graph, args.file, relative_image_dir(args.image_dir, args.output))
    text = header(args.file, graph.format) + _dumps(conversion.workflow)
    return _write(text, args, conversion.notes)


def _import_a1111(args: argparse.Namespace) -> int:
    from sdflow.formats.infotext import parse_infotext
    from sdflow.interop.a1111_params import plan
    from sdflow.interop.a1111_workflow import build, checkpoint_name

    where = Location(args.file)
    parameters = read_parameters(args.file)
    run, problems = plan(parse_infotext(parameters), args.init_image is not None)
    if problems:
        raise WorkflowErrors([UserError(problem, where) for problem in problems])
    checkpoint = args.checkpoint or checkpoint_name(run.model)
    if checkpoint is None:
        run.notes.append("the parameters name no Model: give one with `--set checkpoint=NAME` when running")
    init = args.init_image
    if init is not None and not Path(init).is_absolute():  # written relative to the YAML's folder
        init = os.path.relpath(Path(init).resolve(), Path(args.output).resolve().parent)
    if init is None and run.strength is not None:
        run.notes.append("an img2img run (Denoising strength): give the init picture with `--set image=PATH`")
    comment = "".join(f"#   {line}\n" for line in parameters.splitlines())
    text = (
        f"# Imported by `sdflow import a1111` from the A1111 parameters of {Path(args.file).name}:\n{comment}"
        "# Relative paths (LoadImage) are relative to this file's folder.\n"
    ) + _dumps(build(run, checkpoint, init))
    return _write(text, args, run.notes)


def read_parameters(path: str) -> str:
    """A1111's parameters text: a PNG's 'parameters' chunk, a JPEG's or WebP's EXIF UserComment, or
    a text file's content."""
    from sdflow.formats.exif import user_comment
    from sdflow.formats.infotext import INFOTEXT_KEY
    from sdflow.formats.png import is_png, text_chunks

    where = Location(path)
    if is_png(path):
        chunks = text_chunks(path)
        if INFOTEXT_KEY in chunks:
            return chunks[INFOTEXT_KEY]
        if "prompt" in chunks or "workflow" in chunks:
            hint = f"a ComfyUI workflow: convert it with `sdflow import comfy {path} -o WORKFLOW.yaml`"
        elif "sdflow:workflow" in chunks:
            hint = f"an sdflow workflow: run it with `sdflow run {path}`"
        else:
            hint = "no text chunks sdflow knows"
        raise UserError(f"this PNG holds no A1111 parameters ('parameters' text) but {hint}", where)
    comment = user_comment(path)  # a JPEG or WebP A1111 saved
    if comment is not None:
        return comment
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError("file not found", where) from None
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read the file (a PNG, JPEG or WebP A1111 saved, or a text file): {exc}"
        raise UserError(message, where) from None


def _dumps(workflow: Any) -> str:
    from sdflow.graphs.yaml_io import dumps

    return dumps(workflow)


def _write(text: str, args: argparse.Namespace, notes: list[str]) -> int:
    """Write ``text`` to ``args.output`` (a new file) once it loads and validates as it is."""
    from sdflow.files import write_new_path
    from sdflow.graphs.validate import validate
    from sdflow.graphs.yaml_io import loads
    from sdflow.interop.comfy import ConversionError

    try:
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
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(written)
    return EXIT_OK


def header(source: str, kind: str) -> str:
    """The comment the YAML written by `import comfy` starts with."""
    return (
        f"# Imported by `sdflow import comfy` from the ComfyUI {kind}-format workflow {Path(source).name}.\n"
        "# Relative paths (LoadImage) are relative to this file's folder.\n"
    )
