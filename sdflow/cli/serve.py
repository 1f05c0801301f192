"""The `sdflow serve` command; the server's packages are imported only when it runs."""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
from pathlib import Path
from typing import Any

from sdflow.cli.options import ALLOW_PICKLE_HELP
from sdflow.errors import Location, UserError

_UNITS = {"": 1, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def add_command(commands: Any) -> None:
    """Register `sdflow serve` on the CLI's subparsers."""
    serve = commands.add_parser("serve", help="run a warm server with a persistent job queue and a JSON API")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--data", default="sdflow-data", metavar="DIR", help="queue database and outputs")
    tokens = serve.add_mutually_exclusive_group()
    tokens.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every request")
    tokens.add_argument("--token-file", metavar="F", help="read the token from file F (first line)")
    serve.add_argument("--max-body", default="32MB", help="largest request body (default 32MB)")
    serve.add_argument(
        "--cors", action="append", default=[], metavar="ORIGIN", help="let pages from ORIGIN call the API"
    )
    serve.add_argument(
        "--preview", type=int, default=0, metavar="K", help="send a preview picture every K denoising steps"
    )
    serve.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
    serve.add_argument(
        "--sync",
        choices=["full", "normal"],
        default="normal",
        help="normal (default): an accepted job is written to the queue database before the reply (it "
        "survives the server being killed, SIGKILL included); full: also synced to disk (survives a power "
        "loss; ~5 ms more per job)",
    )
    serve.add_argument("--quiet", action="store_true", help="log warnings only (no line per request)")
    from sdflow.cli.runner_options import add_runner_arguments
    from sdflow.cli.scale import add_arguments as add_scale_arguments

    add_runner_arguments(serve)
    add_scale_arguments(serve)
    serve.set_defaults(handler=run)


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses; any other name counts as reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_size(text: str) -> int:
    """'32MB' -> bytes; a UserError on anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?B?)\s*", text.upper())
    if not match or int(match.group(1)) < 1:
        raise UserError(f"--max-body {text}: expected a size such as 32MB", Location(field="--max-body"))
    return int(match.group(1)) * _UNITS[match.group(2) if match.group(2) != "K" else "KB"]


def read_token(path: str) -> str:
    """The token in ``path``'s first line; a missing file or an empty token is a UserError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"--token-file {path}: cannot read it: {exc}", Location(field="--token-file")
        ) from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise UserError(f"--token-file {path}: the first line is empty", Location(field="--token-file"))
    return token


def check_options(args: argparse.Namespace) -> int:
    """The options' mistakes as UserErrors (exit 2); returns --max-body in bytes (reads --token-file)."""
    if args.token_file:
        args.token = read_token(args.token_file)
    if not is_loopback(args.host) and not args.token:
        raise UserError(
            f"--host {args.host} is reachable from other machines: give --token too", Location(field="--host")
        )
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: must be 1 to 65535", Location(field="--port"))
    if getattr(args, "preview", 0) < 0:
        raise UserError(f"--preview {args.preview}: must be 0 (none) or more", Location(field="--preview"))
    if getattr(args, "ray_address", None) and getattr(args, "workers", None) is None:
        raise UserError("--ray-address needs --workers N", Location(field="--ray-address"))
    if getattr(args, "workers", None) is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1", Location(field="--workers"))
    return parse_size(args.max_body)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    max_body = check_options(args)
    try:
        import uvicorn

        from sdflow.serve.app import create_app
    except ImportError:
        raise UserError("sdflow serve needs the 'serve' extra (pip install 'sdflow[serve]')") from None
    from sdflow.cli.runner_options import make_runner

    def runner(output_dir: str) -> Any:
        return make_runner(args, output_dir=output_dir, allow_pickle=args.allow_pickle)

    app = create_app(
        args.data,
        token=args.token,
        max_body=max_body,
        make_runner=runner,
        allow_pickle=args.allow_pickle,
        preview_every=args.preview,
        cors=args.cors or None,
        make_worker=_ray_worker(args) if args.workers is not None else None,
        sync=args.sync,
    )
    logs = {"log_level": "warning", "access_log": False} if args.quiet else {"log_level": "info"}
    config = uvicorn.Config(app, host=args.host, port=args.port, timeout_graceful_shutdown=30, **logs)
    # uvicorn turns SIGTERM and Ctrl-C into a graceful stop (the app's shutdown stops the running job
    # at its next step boundary and puts it back in the queue), then raises the signal again for the
    # handlers it found: these take it, so a clean stop exits 0
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _stopped(sig: int, frame: Any) -> None:
    """The signal uvicorn passes on once it stopped gracefully: nothing more to do."""


def _ray_worker(args: argparse.Namespace) -> Any:
    """A maker of the worker that runs jobs on ``--workers N`` Ray workers (the queue stays here)."""
    from sdflow.serve.ray_worker import RayWorker

    def make(queue: Any, settings: Any, **options: Any) -> Any:
        options.pop("make_runner", None)
        where = {"address": args.ray_address, "device": args.device, "dtype": args.dtype}
        return RayWorker(queue, settings, args.workers, **where, **options)

    return make
