"""Shared helpers of the `sdflow serve` tests: an in-process app client, waiting for jobs, and a real
server in a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from sdflow.serve.app import create_app
from tests.conftest import EXAMPLES

TXT2IMG = (EXAMPLES / "txt2img.yaml").read_text()
FAST = {"steps": 2, "seed": 5}
ENDED = ("finished", "failed", "cancelled")


def cpu_runner(output_dir: str) -> Any:
    from sdflow.runner import Runner

    return Runner(device="cpu", dtype="fp32", output_dir=output_dir)


def client(data: Path, **options: Any) -> TestClient:
    """A client of the app on ``data`` (no worker unless ``worker=True``), bugs answered as 500."""
    options.setdefault("worker", False)
    options.setdefault("make_runner", cpu_runner)
    return TestClient(create_app(data, **options), raise_server_exceptions=False)


def wait(http: Any, job_id: str, seconds: float = 120, prefix: str = "") -> dict[str, Any]:
    """The job once it ended (finished, failed or cancelled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = http.get(f"{prefix}/api/jobs/{job_id}").json()
        if job["state"] in ENDED:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end in {seconds}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data: Path, port: int, *extra: str, seconds: float = 120) -> subprocess.Popen[bytes]:
    """`python -m sdflow.cli serve` on 127.0.0.1:``port``, once it answers."""
    import httpx

    command = [sys.executable, "-m", "sdflow.cli", "serve", "--data", str(data), "--port", str(port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(EXAMPLES.parent)}
    options = ["--device", "cpu", "--dtype", "fp32", "--quiet", *extra]
    process = subprocess.Popen([*command, *options], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/queue", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")
