"""The page at `/` in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python API; nothing downloads a browser): the shipped example is opened and submitted from the
page, its progress reaches the end, and the picture shown is byte for byte the one `sdflow run`
writes for the same workflow and inputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES

CHROMIUM = Path("/usr/bin/chromium")
ROOT = EXAMPLES.parent
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEPS = 2


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


def serve(data: Path, port: int, cwd: Path) -> subprocess.Popen:
    """`sdflow serve` on 127.0.0.1:port, started (``wait_until_up`` waits for it)."""
    command = [sys.executable, "-m", "sdflow.cli", "serve", "--data", str(data), "--port", str(port)]
    command += ["--device", "cpu", "--dtype", "fp32"]
    return subprocess.Popen(command, cwd=cwd, env=environment(), stderr=subprocess.DEVNULL)


def wait_until_up(process: subprocess.Popen, port: int) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/jobs", timeout=1)
            return
        except httpx.TransportError:
            assert process.poll() is None, "the server exited"
            time.sleep(0.3)
    raise AssertionError("the server did not start")


def browser_page(playwright: Any, profile: Path) -> Any:
    """A fresh Chromium profile's context (the system browser, none downloaded)."""
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=FLAGS,
        viewport={"width": 1280, "height": 1100},
    )


def cli_png(workflow: Path, output: Path) -> bytes:
    """What `sdflow run WORKFLOW --set steps=STEPS` writes."""
    from sdflow.cli import main

    command = ["run", str(workflow), "--set", f"steps={STEPS}", "--output-dir", str(output)]
    assert main([*command, "--device", "cpu", "--dtype", "fp32", "--quiet"]) == 0
    [picture] = output.glob("*.png")
    return picture.read_bytes()


@pytest.mark.slow
def test_the_page_submits_the_example_and_shows_the_clis_picture(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the serve extra's playwright is not installed"
    )
    # in the server's input folder, where its jobs' relative paths resolve: the folder `sdflow run`
    # resolves them in, and which both record in the picture, is then the same
    inputs = tmp_path / "data" / "inputs"
    inputs.mkdir(parents=True)
    workflow = inputs / "txt2img.yaml"
    shutil.copy(EXAMPLES / "txt2img.yaml", workflow)
    port = free_port()
    server = serve(tmp_path / "data", port, tmp_path)
    try:
        expected = cli_png(workflow, tmp_path / "cli")  # while the server starts
        wait_until_up(server, port)
        with sync_api.sync_playwright() as playwright:
            context = browser_page(playwright, tmp_path / "profile")
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.set_input_files("#file", str(workflow))
            page.fill("#input-steps", str(STEPS))
            page.click("#submit")
            job = page.wait_for_selector(".job[data-state=finished]", timeout=240_000)
            assert job.get_attribute("data-progress") == "done"
            assert job.eval_on_selector(".bar > div", "bar => bar.style.width") == "100%"
            image = page.wait_for_selector("#gallery img", timeout=30_000)
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)
            assert image.evaluate("img => img.naturalWidth") == 64
            shown = bytes(
                page.evaluate(
                    "async src => Array.from(new Uint8Array(await (await fetch(src)).arrayBuffer()))",
                    image.get_attribute("src"),
                )
            )
            assert page.eval_on_selector_all("#graph svg g[data-node]", "groups => groups.length") > 0
            finished = page.eval_on_selector_all(
                "#graph svg g.st-done, #graph svg g.st-cached", "groups => groups.length"
            )
            assert finished == page.eval_on_selector_all("#graph svg g[data-node]", "groups => groups.length")
            screenshot = os.environ.get("SDFLOW_PAGE_SCREENSHOT")
            if screenshot:  # docs/serve-page.png is made this way
                page.screenshot(path=screenshot, full_page=True)
            context.close()
    finally:
        server.terminate()
        server.wait(60)
    assert shown[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown == expected
