"""`sdflow run ... --workers N [--ray-address ADDRESS]`: a sweep spread over Ray workers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sdflow.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USER
from sdflow.cli.runner_options import write_report
from sdflow.errors import Location, UserError, one_line
from sdflow.graphs.model import Workflow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scale-out options of `sdflow run`."""
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help='run the sweep on N Ray workers, each keeping its caches warm (needs pip install -e ".[ray]")',
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="join this Ray cluster (e.g. 'auto' or ray://HEAD:10001) instead of starting a local one",
    )


def run_on_workers(args: argparse.Namespace, workflow: Workflow, runs: list[dict[str, Any]]) -> int:
    """Run ``workflow`` once per inputs in ``runs`` on ``args.workers`` Ray workers (already checked).

    Files are written here as a serial run names them; a run that fails is reported once and the
    others go on. Exit code 2 if a run failed on a user mistake, 1 if one failed otherwise.
    """
    from tqdm import tqdm

    from sdflow.runner.scale.distributed import RayBackend
    from sdflow.runner.scale.many import JobResult, run_many

    if args.workers is None:
        raise UserError("--ray-address needs --workers N", Location(field="--ray-address"))
    backend = RayBackend(
        args.workers,
        address=args.ray_address,
        device=args.device,
        dtype=args.dtype,
        allow_pickle=args.allow_pickle,
    )
    bar = tqdm(total=len(runs), unit="run", file=sys.stderr, disable=args.quiet, desc="runs", delay=0.5)

    def finished(result: JobResult) -> None:
        for warning in result.report.warnings if result.report is not None else []:
            bar.write(f"warning: run {result.index + 1}: {one_line(warning)}", sys.stderr)
        for path in result.files:
            print(path)
        if result.failure is not None:
            subject = f"run {result.index + 1} {one_line(str(result.inputs))}"
            for line in result.failure.lines(subject, getattr(args, "debug", False)):
                bar.write(line, sys.stderr)
        bar.update(1)

    try:
        results = run_many(workflow, runs, backend, output_dir=args.output_dir, on_result=finished)
    except OSError as exc:  # the output folder went away or filled up while running
        raise UserError(f"--output-dir {args.output_dir}: cannot write the outputs: {exc}") from None
    finally:
        bar.close()
        backend.close()
    if args.report:
        document = {
            "workflow": args.workflow,
            "workers": args.workers,
            "runs": [r.to_dict() for r in results],
        }
        write_report(args.report, document, args.quiet)
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"{len(results) - len(failed)} of {len(results)} runs succeeded", file=sys.stderr)
    if any(not r.user_error for r in failed):
        return EXIT_FAILED
    return EXIT_USER if failed else EXIT_OK
