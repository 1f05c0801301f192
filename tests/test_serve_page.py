"""The page at `/` in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python API; nothing downloads a browser): the shipped example is opened and submitted from the
page, its progress reaches the end, and the picture shown is byte for byte the one `sdflow run`
writes for the same workflow and inputs."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES
from tests.serve_helpers import free_port, start_server

CHROMIUM = Path("/usr/bin/chromium")
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
# records every progress label the queue shows, however briefly
SEEN_PROGRESS = """() => {
  window.seenProgress = [];
  new MutationObserver(() => {
    for (const job of document.querySelectorAll('.job')) window.seenProgress.push(job.dataset.progress);
  }).observe(document.querySelector('#jobs'), {childList: true, subtree: true, attributes: true});
}"""


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
        if os.environ.get("SDFLOW_CI"):  # .ci/run installs it: there its absence is a failure
            pytest.fail("no /usr/bin/chromium in CI: .ci/run should have installed it")
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
    with ThreadPoolExecutor(1) as pool:  # the CLI's run while the server starts
        expected = pool.submit(cli_png, workflow, tmp_path / "cli")
        server = start_server(tmp_path / "data", port)
        expected_png = expected.result()
    try:
        with sync_api.sync_playwright() as playwright:
            context = browser_page(playwright, tmp_path / "profile")
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#connection:text('live')")  # following WS /api/events
            page.evaluate(SEEN_PROGRESS)
            page.set_input_files("#file", str(workflow))
            page.fill("#input-steps", str(STEPS))
            page.click("#submit")
            job = page.wait_for_selector(".job[data-state=finished]", timeout=240_000)
            assert job.get_attribute("data-progress") == "done"
            assert f"step {STEPS}/{STEPS}" in page.evaluate("window.seenProgress")  # live, from step events
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
            page.click(".job[data-state=finished] button.rerun")  # the same job again, from the cache
            page.wait_for_function("document.querySelectorAll('.job[data-state=finished]').length == 2")
            assert page.eval_on_selector_all("#gallery img", "images => images.length") == 2
            screenshot = os.environ.get("SDFLOW_PAGE_SCREENSHOT")
            if screenshot:  # docs/serve-page.png is made this way
                page.screenshot(path=screenshot, full_page=True)
            context.close()
    finally:
        server.terminate()
        server.wait(60)
    assert shown[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown == expected_png
