"""`sdflow graph WORKFLOW -o graph.svg|graph.mmd [--report FILE.json]`: draw a workflow's DAG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sdflow.cli.options import EXIT_OK
from sdflow.errors import Location, UserError

FORMATS = (".svg", ".mmd")


def add_commands(commands: Any) -> None:
    """Register `graph` on the `sdflow` subcommand parser."""
    graph = commands.add_parser("graph", help="draw a workflow's graph as SVG or Mermaid text")
    graph.add_argument("workflow", help="a workflow YAML (or a PNG sdflow saved)")
    graph.add_argument("-o", "--output", required=True, metavar="FILE.svg|FILE.mmd")
    graph.add_argument(
        "--report",
        metavar="FILE.json",
        help="colour nodes that ran or came from the cache (sdflow run --report)",
    )
    graph.add_argument(
        "--run", type=int, default=-1, metavar="N", help="which run of the report (default: last)"
    )
    graph.set_defaults(handler=_graph)


def _graph(args: argparse.Namespace) -> int:
    from sdflow.draw.layout import drawing
    from sdflow.draw.mermaid import to_mermaid
    from sdflow.draw.svg import to_svg
    from sdflow.files import write_new_path
    from sdflow.graphs.loading import load
    from sdflow.graphs.validate import validate

    suffix = Path(args.output).suffix.lower()
    if suffix not in FORMATS:
        raise UserError(
            f"the output must end in {' or '.join(FORMATS)}, got '{suffix}'", Location(field="--output")
        )
    workflow = load(args.workflow)
    validate(workflow)
    status = read_status(args.report, args.run) if args.report else {}
    picture = drawing(workflow, status)
    text = to_svg(picture) if suffix == ".svg" else to_mermaid(picture)
    try:
        written = write_new_path(args.output, text.encode())
    except OSError as exc:
        raise UserError(f"cannot write the drawing: {exc}", Location(field="--output")) from None
    print(written)
    return EXIT_OK


def read_status(path: str, run: int) -> dict[str, str]:
    """Node id -> "ran" / "cached" from one run of a `sdflow run --report` file."""
    where = Location(path, field="--report")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        runs = document["runs"]
        chosen = runs[run]
        return {str(n["id"]): str(n["status"]) for n in chosen["nodes"]}
    except FileNotFoundError:
        raise UserError("report file not found", where) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read the report: {exc}", where) from None
    except IndexError:
        raise UserError(f"the report has no run {run} (it has {len(runs)})", where) from None
    except (KeyError, TypeError):
        raise UserError(
            "not a `sdflow run --report` file (expected runs[].nodes[].id/status)", where
        ) from None
