"""The installed command leaves without the interpreter's teardown, yet loses nothing on the way:
exit code, buffered output, atexit handlers and running threads are all honoured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_exit_now_keeps_the_code_the_output_and_the_atexit_handlers():
    done = run_python(
        """
        import atexit, sys, threading, time
        from sdflow.cli import exit_now

        atexit.register(lambda: print("atexit ran"))
        worker = threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished")))
        worker.start()
        print("buffered", end=" ")
        sys.stderr.write("to stderr")
        exit_now(3)
        print("never")
        """
    )
    assert done.returncode == 3
    assert done.stdout.startswith("buffered ")
    assert "thread finished" in done.stdout and "atexit ran" in done.stdout
    assert done.stdout.index("thread finished") < done.stdout.index("atexit ran")
    assert "never" not in done.stdout
    assert done.stderr == "to stderr"


def test_the_command_exits_with_mains_code():
    ok = subprocess.run(
        [sys.executable, "-m", "sdflow.cli", "validate", str(ROOT / "examples" / "txt2img.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "sdflow.cli", "validate", str(ROOT / "no-such-workflow.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
