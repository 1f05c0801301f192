"""The `sdflow` command: run, validate and list nodes."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from sdflow.errors import DEBUG_HINT, Location, UserError, WorkflowError, internal_error, one_line
from sdflow.graphs.model import Workflow
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import load
from sdflow.nodes import registry
from sdflow.nodes.fields import fields_of, type_label
from sdflow.runner_cli import add_runner_arguments, make_runner, write_report

EXIT_OK, EXIT_FAILED, EXIT_USER = 0, 1, 2
ALLOW_PICKLE_HELP = "load .ckpt/.pt/.bin/.pth pickle weight files (they can run code; read weights-only)"


DEBUG_FLAG = "--debug"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere before a lone '--', for every command (SDFLOW_DEBUG=1 does the same).
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end] or os.environ.get("SDFLOW_DEBUG", "") not in ("", "0")
    argv = [a for i, a in enumerate(argv) if not (i < end and a == DEBUG_FLAG)]
    parser = _parser()
    args = parser.parse_args(argv)
    args.debug = debug  # for commands that report bugs of several runs themselves (--workers)
    try:
        return args.handler(args)
    except UserError as exc:
        for error in getattr(exc, "errors", [exc]):
            print(f"error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # `sdflow nodes | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user mistake: one line, the traceback only on request
        if debug:
            traceback.print_exc()
        print(internal_error_line(exc), file=sys.stderr)
        return EXIT_FAILED


def console() -> NoReturn:
    """The installed ``sdflow`` command: ``main()``, then leave at once (``exit_now``)."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, which takes about a second once torch,
    diffusers and transformers are imported (freeing thousands of modules one by one). Everything
    an orderly exit does that matters still happens first: other threads are joined, the atexit
    handlers run (Ray's shutdown, logging, temporary files) and the standard streams are flushed.
    Outputs were written and closed before (each atomically)."""
    try:
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def internal_error_line(exc: BaseException) -> str:
    """'internal error: ...' naming the node that was running, and how to see the traceback."""
    return one_line(f"{internal_error(exc)} {DEBUG_HINT}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdflow", description=__doc__)
    parser.add_argument(
        DEBUG_FLAG,
        action="store_true",
        help="on an internal error, print its traceback (also SDFLOW_DEBUG=1); allowed after any command",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a workflow")
    run.add_argument("workflow")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a workflow input (repeatable)",
    )
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run once per value, reusing the caches (repeatable: all combinations)",
    )
    run.add_argument("--output-dir", default="outputs")
    add_runner_arguments(run)
    run.add_argument(
        "--batch",
        type=int,
        default=1,
        metavar="N",
        help="run up to N sweep items that differ only in seed or prompt as one batch (same pixels)",
    )
    run.add_argument("--report", metavar="FILE.json", help="write a JSON report of every run")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    run.set_defaults(handler=_run)
    from sdflow.scale_cli import add_arguments as add_scale_arguments

    add_scale_arguments(run)

    check = commands.add_parser("validate", help="check a workflow without running it")
    check.add_argument("workflow")
    check.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="check with this workflow input value (repeatable)",
    )
    check.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    check.set_defaults(handler=_validate)

    nodes = commands.add_parser("nodes", help="list node types, or describe one")
    nodes.add_argument("type", nargs="?")
    nodes.set_defaults(handler=_nodes)

    from sdflow.bench import add_command as add_bench
    from sdflow.draw import cli as draw_cli
    from sdflow.golden import cli as golden_cli
    from sdflow.interop import cli as interop_cli
    from sdflow.models_cli import add_command as add_models_command
    from sdflow.serve import cli as serve_cli

    golden_cli.add_commands(commands)
    add_models_command(commands)
    interop_cli.add_commands(commands)
    draw_cli.add_commands(commands)
    add_bench(commands)
    serve_cli.add_command(commands)
    return parser


# -- run ----------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from sdflow.runner.executor import check
    from sdflow.runner.progress import ProgressPrinter, WarningPrinter

    workflow = load(args.workflow)
    validate(workflow)
    fixed = dict(parse_assignment(workflow, text) for text in args.set)
    combinations = sweep_combinations(workflow, args.sweep)
    for varied in combinations:  # every run is checked before the first one starts
        check(workflow, {**fixed, **varied}, allow_pickle=args.allow_pickle)
    writable_folder(Path(args.output_dir), f"--output-dir {args.output_dir}")
    if args.report:
        writable_folder(Path(args.report).parent, f"--report {args.report}")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1", Location(field="--batch"))
    if args.workers is not None or args.ray_address:
        from sdflow.scale_cli import run_on_workers

        if args.batch > 1:
            raise UserError("--batch and --workers do not combine yet: give one", Location(field="--batch"))

        return run_on_workers(args, workflow, [{**fixed, **varied} for varied in combinations])
    runner = make_runner(args, output_dir=args.output_dir, allow_pickle=args.allow_pickle)
    runner.subscribe(WarningPrinter(sys.stderr) if args.quiet else ProgressPrinter(sys.stderr))
    runs = []
    items = [{**fixed, **varied} for varied in combinations]
    for result in _results(runner, workflow, items, args):
        runs.append(result.report.to_dict())
        for path in result.report.files:
            print(path)
    if args.report:
        document = {"workflow": args.workflow, "runs": runs}
        write_report(args.report, document, args.quiet)
    return EXIT_OK


def _results(runner: Any, workflow: Workflow, items: list[dict[str, Any]], args: argparse.Namespace):
    """The run results of ``items`` in order: one by one, or grouped in batches of ``--batch``."""
    from sdflow.runner.batch import run_batched

    def announce(index: int, count: int) -> None:
        if len(items) > 1 and not args.quiet:
            what = ", ".join(str(items[i]) for i in range(index, index + count))
            print(
                f"run {index + 1}/{len(items)}{f' (batch of {count})' if count > 1 else ''}: {what}",
                file=sys.stderr,
            )

    try:
        if args.batch > 1:
            yield from run_batched(runner, workflow, items, batch=args.batch, announce=announce)
        else:
            for index, inputs in enumerate(items):
                announce(index, 1)
                yield runner.run(workflow, inputs=inputs)
    except OSError as exc:  # the output folder went away or filled up while running
        raise UserError(f"--output-dir {args.output_dir}: cannot write the outputs: {exc}") from None


def writable_folder(folder: Path, option: str) -> None:
    """Refuse, before anything runs, a folder that cannot be made or written (a file is in the way...)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{option}: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option}: no permission to write in '{existing}'")


def parse_assignment(workflow: Workflow, text: str) -> tuple[str, Any]:
    """'NAME=VALUE' -> (name, value typed as the workflow input declares)."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise UserError(f"--set {text}: expected NAME=VALUE", Location(workflow.file))
    return name, checked(workflow, name, coerce(workflow, name, raw), f"--set {text}")


def checked(workflow: Workflow, name: str, value: Any, option: str) -> Any:
    """``value`` if workflow input ``name`` exists and takes it; else a UserError naming ``option``."""
    spec = workflow.inputs.get(name)
    if spec is None:
        more = registry.suggestion(
            name, workflow.inputs, f" (inputs: {', '.join(workflow.inputs) or 'none'})"
        )
        raise WorkflowError(f"{option}: the workflow has no input '{name}'{more}", Location(workflow.file))
    try:
        return spec.check(value)
    except ValueError as exc:
        raise WorkflowError(f"{option}: {exc}", spec.loc or Location(workflow.file)) from None


def coerce(workflow: Workflow, name: str, raw: str) -> Any:
    """A command-line string as the type of input ``name`` (strings stay verbatim)."""
    spec = workflow.inputs.get(name)
    if spec is not None and spec.type == "str":
        return raw
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return raw


def sweep_combinations(workflow: Workflow, sweeps: list[str]) -> list[dict[str, Any]]:
    """Every combination of the swept values (one empty combination when nothing is swept)."""
    axes = []
    for text in sweeps:
        name, sep, raw = text.partition("=")
        if not sep or not name or not raw:
            raise UserError(f"--sweep {text}: expected NAME=V1,V2,...", Location(workflow.file))
        values = [v.replace("\\,", ",") for v in _split_commas(raw)]
        option = f"--sweep {text}"
        axes.append([(name, checked(workflow, name, coerce(workflow, name, v), option)) for v in values])
    return [dict(choice) for choice in itertools.product(*axes)]


def _split_commas(raw: str) -> list[str]:
    """Split on commas not preceded by a backslash."""
    parts, current, escaped = [], "", False
    for char in raw:
        if char == "," and not escaped:
            parts.append(current)
            current = ""
        else:
            current += char
        escaped = char == "\\" and not escaped
    return [*parts, current]


# -- validate and nodes -------------------------------------------------------------------------


def _validate(args: argparse.Namespace) -> int:
    from sdflow.runner.executor import check

    workflow = load(args.workflow)
    validate(workflow)
    given = dict(parse_assignment(workflow, text) for text in args.set)
    unset = [name for name, spec in workflow.inputs.items() if spec.required and name not in given]
    count = f"{len(workflow.nodes)} node{'s' if len(workflow.nodes) != 1 else ''}"
    if unset:  # the graph is fine; values that depend on these inputs can only be checked with them
        print(f"{args.workflow}: valid ({count}; give {', '.join(unset)} with --set to check the values)")
        return EXIT_OK
    check(
        workflow, given, allow_pickle=args.allow_pickle
    )  # what a run checks first: ranges of input values, missing files...
    print(f"{args.workflow}: valid ({count})")
    return EXIT_OK


def _nodes(args: argparse.Namespace) -> int:
    types = registry.all_types()
    if args.type is None:
        for cls in types.values():
            print(f"{cls.type_name}: {cls.summary()}\n  {signature(cls)}")
        print("\n`sdflow nodes TYPE` describes each field.")
        return EXIT_OK
    cls = types.get(args.type)
    if cls is None:
        more = registry.suggestion(args.type, types)
        raise WorkflowError(f"unknown node type '{args.type}'{more}", Location(field="TYPE"))
    print(describe(cls))
    return EXIT_OK


def signature(cls: type) -> str:
    """A node type on one line: typed inputs with defaults and ranges -> typed outputs."""
    parts = []
    for name, field in fields_of(cls).items():
        text = f"{name}: {type_label(field.annotation)}"
        if not field.required and not field.is_port:
            text += f" = {field.default!r}"
        limits = field.constraints()
        if limits and not limits.startswith("one of"):
            text += f" [{limits}]"
        parts.append(text)
    outputs = ", ".join(f"{name}: {kind.__name__}" for name, kind in cls.outputs.items())
    return f"({', '.join(parts)}) -> {outputs}"


def describe(cls: type) -> str:
    """A node type's help: summary, typed inputs with defaults and ranges, outputs."""
    lines = [f"{cls.type_name} (version {cls.version}): {cls.summary()}", "inputs:"]
    for name, field in fields_of(cls).items():
        text = f"  {name}: {type_label(field.annotation)}"
        if field.is_port:
            text += " (link)" if field.required else " (optional link)"
        elif field.required:
            text += " (required)"
        else:
            text += f" = {field.default!r}"
        limits = field.constraints()
        if limits and not limits.startswith("one of"):
            text += f" [{limits}]"
        if field.description:
            text += f" — {field.description}"
        lines.append(text)
    lines.append("outputs:")
    lines += [f"  {name}: {kind.__name__}" for name, kind in cls.outputs.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    console()
