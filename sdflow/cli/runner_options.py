"""Command-line options that make a Runner (device, dtype, model settings), shared by `sdflow run`
and `sdflow bench`; a slow-dtype warning becomes one line on stderr before anything heavy runs."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from sdflow.errors import Location, UserError


def add_runner_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --dtype, --attention, --channels-last, --compile, --offload."""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="auto (default): fp16 on cuda; bf16 on a CPU with native bf16 that measures faster; else fp32",
    )
    parser.add_argument(
        "--attention",
        default="sdpa",
        choices=["sdpa", "sliced"],
        help="sdpa (default): torch's fused attention; sliced: a few heads at a time, least memory",
    )
    parser.add_argument(
        "--channels-last",
        choices=["auto", "on", "off"],
        default="auto",
        help="NHWC memory layout for UNet and VAE (auto: on for cuda)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (first run compiles)")
    parser.add_argument(
        "--offload",
        default="none",
        choices=["none", "model"],
        help="model: keep models on the CPU, each on the GPU only while used (small GPUs)",
    )


def make_runner(args: argparse.Namespace, **options: Any) -> Any:
    """A Runner from the parsed options; device mistakes are UserErrors, a slow dtype one warning line."""
    from sdflow.runner.core.executor import Runner
    from sdflow.runner.devices.accel import Acceleration
    from sdflow.runner.devices.dtypes import SlowDtypeWarning

    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    acceleration = Acceleration(args.attention, channels_last, args.compile, args.offload)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlowDtypeWarning)
        try:
            runner = Runner(device=args.device, dtype=args.dtype, acceleration=acceleration, **options)
        except ValueError as exc:
            raise UserError(str(exc), Location(field="--device")) from None
    for warning in caught:
        if issubclass(warning.category, SlowDtypeWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return runner


def write_report(path: str, document: dict[str, Any], quiet: bool) -> None:
    """The --report JSON, written atomically under a new name; a write failure is the user's to fix."""
    from sdflow.files import write_new_path

    try:
        written = write_new_path(path, json.dumps(document, indent=2).encode())
    except OSError as exc:
        raise UserError(f"--report {path}: cannot write the report: {exc}") from None
    if not quiet:
        print(f"report: {written}", file=sys.stderr)
