"""`sdflow run` and `sdflow validate`: run a workflow (once, swept or batched), or only check it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sdflow import lean
from sdflow.cli.clock import FirstStep
from sdflow.cli.options import (
    ALLOW_PICKLE_HELP,
    EXIT_OK,
    add_set_argument,
    parse_assignment,
    sweep_combinations,
    writable_folder,
)
from sdflow.cli.progress import ProgressPrinter, WarningPrinter
from sdflow.cli.runner_options import add_runner_arguments, make_runner, write_report
from sdflow.cli.scale import add_arguments as add_scale_arguments
from sdflow.cli.scale import run_on_workers
from sdflow.errors import Location, UserError
from sdflow.graphs.loading import load
from sdflow.graphs.model import Workflow
from sdflow.graphs.validate import validate
from sdflow.runner.core.plan import check


def add_commands(commands: Any) -> None:
    """The `run` and `validate` sub-commands."""
    run = commands.add_parser("run", help="run a workflow")
    run.add_argument("workflow")
    add_set_argument(run, "set a workflow input (repeatable)")
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
    run.set_defaults(handler=_run, settles_imports=True)
    add_scale_arguments(run)

    check = commands.add_parser("validate", help="check a workflow without running it")
    check.add_argument("workflow")
    add_set_argument(check, "check with this workflow input value (repeatable)")
    check.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    check.set_defaults(handler=_validate)


def _run(args: argparse.Namespace) -> int:
    workflow = load(args.workflow)
    validate(workflow)
    fixed = dict(parse_assignment(workflow, text) for text in args.set)
    combinations = sweep_combinations(workflow, args.sweep)
    for varied in combinations:  # every run is checked before the first one starts
        check(workflow, {**fixed, **varied}, allow_pickle=args.allow_pickle)
    lean.settle()  # the node modules are imported: the garbage collector goes on (sdflow.lean)
    writable_folder(Path(args.output_dir), f"--output-dir {args.output_dir}")
    if args.report:
        writable_folder(Path(args.report).parent, f"--report {args.report}")
    if args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1", Location(field="--batch"))
    if args.workers is not None or args.ray_address:
        if args.batch > 1:
            raise UserError("--batch and --workers do not combine yet: give one", Location(field="--batch"))

        return run_on_workers(args, workflow, [{**fixed, **varied} for varied in combinations])
    runner = make_runner(args, output_dir=args.output_dir, allow_pickle=args.allow_pickle)
    runner.subscribe(WarningPrinter(sys.stderr) if args.quiet else ProgressPrinter(sys.stderr))
    first = FirstStep()
    runner.subscribe(first)
    runs = []
    items = [{**fixed, **varied} for varied in combinations]
    for result in _results(runner, workflow, items, args):
        runs.append(result.report.to_dict())
        for path in result.report.files:
            print(path)
    if args.report:
        document = {"workflow": args.workflow, "seconds": first.timing(), "runs": runs}
        write_report(args.report, document, args.quiet)
    return EXIT_OK


def _results(
    runner: Any, workflow: Workflow, items: list[dict[str, Any]], args: argparse.Namespace
) -> Iterator[Any]:
    """The run results of ``items`` in order: one by one, or grouped in batches of ``--batch``."""

    def announce(index: int, count: int) -> None:
        if len(items) > 1 and not args.quiet:
            what = ", ".join(str(items[i]) for i in range(index, index + count))
            print(
                f"run {index + 1}/{len(items)}{f' (batch of {count})' if count > 1 else ''}: {what}",
                file=sys.stderr,
            )

    try:
        if args.batch > 1:
            yield from runner.run_batches(workflow, items, batch=args.batch, announce=announce)
        else:
            for index, inputs in enumerate(items):
                announce(index, 1)
                yield runner.run(workflow, inputs=inputs)
    except OSError as exc:  # the output folder went away or filled up while running
        raise UserError(f"--output-dir {args.output_dir}: cannot write the outputs: {exc}") from None


def _validate(args: argparse.Namespace) -> int:
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
