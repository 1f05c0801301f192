"""`sdflow golden update|check`: record workflows' images as goldens, and check runs against them."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdflow.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USER, add_set_argument
from sdflow.errors import Location, UserError, WorkflowErrors
from sdflow.golden.compare import DEFAULT_MAX_ABS, DEFAULT_PSNR, DEFAULT_SSIM, Thresholds
from sdflow.graphs.model import Workflow
from sdflow.runner.scale.jobs import Failure

DEFAULT_DIR = "goldens"
THREADS_ENV = "SDFLOW_THREADS"


def add_commands(commands: Any) -> None:
    """Register `golden update` and `golden check` on the `sdflow` subcommand parser."""
    golden = commands.add_parser("golden", help="record golden images of workflows, and check against them")
    actions = golden.add_subparsers(dest="golden_command", required=True)

    update = actions.add_parser("update", help="run workflows and record their images as goldens")
    _common_arguments(update)
    update.set_defaults(handler=_update)

    check = actions.add_parser("check", help="re-run workflows and compare their images with the goldens")
    _common_arguments(check)
    check.add_argument(
        "--max-abs", type=float, default=DEFAULT_MAX_ABS, help="largest allowed |actual - golden| (0..1)"
    )
    check.add_argument("--psnr", type=float, default=DEFAULT_PSNR, help="lowest allowed PSNR in dB")
    check.add_argument("--ssim", type=float, default=DEFAULT_SSIM, help="lowest allowed SSIM")
    check.add_argument(
        "--artifacts", metavar="DIR", help="write failure images here (default: beside each golden)"
    )
    check.add_argument(
        "--workers", type=int, metavar="N", help='check on N Ray workers (needs pip install -e ".[ray]")'
    )
    check.add_argument(
        "--ray-address", metavar="ADDRESS", help="join this Ray cluster instead of a local one"
    )
    check.set_defaults(handler=_check)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", nargs="+")
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help="goldens folder; each workflow's golden is DIR/<file stem>/"
    )
    add_set_argument(
        parser, "set a workflow input (repeatable; check re-uses the golden's and overlays these)"
    )
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="default: fp32 (fp16 on cuda)")
    parser.add_argument(
        "--threads", type=int, help=f"torch CPU threads (default: ${THREADS_ENV}, else torch's own)"
    )


@dataclass
class _Job:
    """One workflow to record or check: its file, the loaded workflow, inputs and golden folder."""

    file: str
    workflow: Workflow
    inputs: dict[str, Any]
    golden_dir: Path


def _update(args: argparse.Namespace) -> int:
    from sdflow.golden.harness import record_workflow

    jobs = _jobs(args)
    runner = _runner(args)
    for job in jobs:
        golden = record_workflow(job.workflow, job.golden_dir, runner, job.inputs)
        shapes = ", ".join(f"{name} {'x'.join(map(str, a.shape))}" for name, a in golden.images.items())
        print(f"{job.file}: recorded {job.golden_dir}/ ({shapes})")
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from sdflow.golden import store
    from sdflow.golden.harness import check_workflow

    jobs = _jobs(args)
    goldens, missing = [], []
    for job in jobs:
        try:
            goldens.append(store.load(job.golden_dir))
        except store.GoldenMissing:
            command = f"sdflow golden update {job.file}" + (
                f" --dir {args.dir}" if args.dir != DEFAULT_DIR else ""
            )
            message = f"no golden recorded in {job.golden_dir}/; record one with: {command}"
            missing.append(UserError(message, Location(job.file)))
    if missing:
        raise missing[0] if len(missing) == 1 else WorkflowErrors(missing)
    thresholds = Thresholds(max_abs=args.max_abs, psnr=args.psnr, ssim=args.ssim)
    artifacts = Path(args.artifacts) if args.artifacts else None
    if args.workers is not None:
        outcomes = _check_on_workers(args, jobs, goldens, thresholds, artifacts)
    else:
        runner = _runner(args)
        outcomes = (
            check_workflow(job.workflow, golden, runner, thresholds, job.inputs, artifacts)
            for job, golden in zip(jobs, goldens, strict=True)
        )
    failed = errors = 0
    for job, result in zip(jobs, outcomes, strict=True):
        if isinstance(result, Failure):  # the run itself failed on a worker; the others go on
            for line in result.lines(job.file, getattr(args, "debug", False)):
                print(line, file=sys.stderr)
            errors += 1
            continue
        for warning in result.warnings:
            print(f"warning: {job.file}: {warning}", file=sys.stderr)
        print(result.report())
        failed += not result.passed
    print(
        f"{len(jobs) - failed - errors} passed, {failed} failed"
        + (f", {errors} could not run" if errors else "")
    )
    return EXIT_FAILED if failed else EXIT_USER if errors else EXIT_OK


def _check_on_workers(args, jobs, goldens, thresholds, artifacts) -> Iterator[Any]:
    """The checks on ``args.workers`` Ray workers, results in the order of the workflows."""
    from sdflow.golden.spread import check_on_workers
    from sdflow.runner.scale.distributed import RayBackend

    threads = _threads(args) or 1
    backend = RayBackend(args.workers, args.ray_address, args.device, args.dtype, cpus_per_worker=threads)
    with backend:
        workflows = [(job.workflow, job.inputs) for job in jobs]
        yield from check_on_workers(workflows, goldens, backend, thresholds, artifacts)


def _jobs(args: argparse.Namespace) -> list[_Job]:
    """Load and validate every workflow before anything runs; two workflows may not share a golden."""
    from sdflow.cli.options import parse_assignment
    from sdflow.golden.capture import image_refs
    from sdflow.graphs.loading import load
    from sdflow.runner.core.plan import resolve_inputs

    jobs: list[_Job] = []
    for file in args.workflow:
        workflow = load(file)
        image_refs(workflow)
        inputs = dict(parse_assignment(workflow, text) for text in args.set)
        resolve_inputs(workflow, inputs)
        golden_dir = Path(args.dir) / Path(file).stem
        twin = next((job for job in jobs if job.golden_dir == golden_dir), None)
        if twin is not None:
            message = f"{file} and {twin.file} would share the golden {golden_dir}/: rename one"
            raise UserError(message, Location(file))
        jobs.append(_Job(file, workflow, inputs, golden_dir))
    return jobs


def _runner(args: argparse.Namespace) -> Any:
    """A Runner on the chosen device and dtype, after setting torch's thread count."""
    import torch

    from sdflow.runner.core.executor import Runner
    from sdflow.runner.devices.device import pick_device
    from sdflow.runner.devices.dtypes import fixed_dtype

    threads = _threads(args)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        # Goldens want the same numbers on every machine: not 'auto', which measures the CPU.
        return Runner(device=args.device, dtype=args.dtype or fixed_dtype(pick_device(args.device)))
    except ValueError as exc:
        raise UserError(str(exc), Location(field="--device")) from None


def _threads(args: argparse.Namespace) -> int | None:
    """torch CPU threads: --threads, else $SDFLOW_THREADS, else None (torch's own choice)."""
    threads = args.threads
    if threads is None and os.environ.get(THREADS_ENV):
        raw = os.environ[THREADS_ENV]
        if not raw.isdigit():
            raise UserError(f"expected a whole number of threads, got '{raw}'", Location(field=THREADS_ENV))
        threads = int(raw)
    if threads is not None and threads < 1:
        raise UserError("needs at least 1 thread", Location(field="--threads"))
    return threads
