"""The `sdflow` command: run, validate, list nodes and models, import, draw, check goldens, bench, serve."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import NoReturn

from sdflow import lean
from sdflow.cli import bench, draw, golden, interop, models, nodes, run, serve
from sdflow.cli.options import EXIT_FAILED, EXIT_OK, EXIT_USER
from sdflow.errors import DEBUG_HINT, UserError, internal_error, one_line

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
    if not getattr(args, "settles_imports", False):
        lean.settle()  # `run` does once its workflow's node modules are imported
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
    """The installed ``sdflow`` command: ``main()`` with the lean imports (sdflow.lean), then leave at
    once (``exit_now``)."""
    lean.enable()
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
    run.add_commands(commands)
    nodes.add_command(commands)
    golden.add_commands(commands)
    models.add_command(commands)
    interop.add_commands(commands)
    draw.add_commands(commands)
    bench.add_command(commands)
    serve.add_command(commands)
    return parser


if __name__ == "__main__":
    console()
