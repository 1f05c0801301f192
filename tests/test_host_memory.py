"""While a denoising loop runs on the CPU, freed large blocks are reused instead of mapped afresh on
every step; afterwards the memory goes back and glibc maps large blocks again (bounded peaks)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sdflow
from sdflow.runner.core import steps

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
ROOT = Path(__file__).resolve().parent.parent

PROGRAM = textwrap.dedent(
    """
    import contextlib, os, resource, sys
    import torch
    from sdflow.runner.devices.host_memory import reusing_freed_blocks

    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def rss():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def five_reallocations():
        for _ in range(2):  # the heap grows to hold the block (and its alignment) once
            block = torch.ones(16 << 20)  # 64 MB of float32, above any mmap threshold
            del block
        before = faults()
        for _ in range(5):
            block = torch.ones(16 << 20)
            del block
        return faults() - before

    with reusing_freed_blocks(torch.device("cpu")):
        inside = five_reallocations()
        blocks = [torch.ones(16 << 20) for _ in range(4)]  # 256 MB, touched, then freed and kept
        del blocks
        kept = rss()
    before = faults()
    for _ in range(3):  # larger than any block freed inside: mapped afresh each time once restored
        block = torch.ones(96 << 20)  # 384 MB
        del block
    print(inside, kept - rss(), faults() - before)
    """
)


def run_program(setting: str | None) -> tuple[int, int, int]:
    """(faults of five 64 MB reallocations inside, bytes given back on leaving, faults of three 384 MB
    allocations afterwards)."""
    env = {k: v for k, v in os.environ.items() if k != "SDFLOW_MALLOC"}
    if setting is not None:
        env["SDFLOW_MALLOC"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    inside, released, outside = (int(v) for v in done.stdout.split())
    return inside, released, outside


BLOCK_FAULTS = 16_384  # 64 MB in 4 KB pages


def test_inside_freed_blocks_are_reused_and_given_back_on_leaving():
    inside, released, outside = run_program(None)
    # freshly mapped, five reallocations fault 5 x 16,384 pages; reused, none — now and then one
    # block's worth, when a small allocation lands in the freed block and the heap moves once
    assert inside <= 2 * BLOCK_FAULTS
    assert released > 200 * 2**20  # most of the 256 MB freed inside went back to the system
    assert outside >= 3 * 6 * BLOCK_FAULTS  # afterwards large blocks are mapped and unmapped again


def test_sdflow_malloc_system_never_changes_the_allocator():
    inside, _, _ = run_program("system")
    assert inside >= 5 * BLOCK_FAULTS  # every reallocation mapped afresh, as glibc does by default


def test_the_runner_scopes_the_setting_to_the_denoising_loop(monkeypatch, tmp_path):
    scoped: list[str] = []

    @contextlib.contextmanager
    def spy(device):
        scoped.append(device.type)
        yield

    monkeypatch.setattr(steps, "reusing_freed_blocks", spy)
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    runner.run(sdflow.load(ROOT / "examples" / "txt2img.yaml"), inputs={"steps": 2}, outputs=["decoded"])
    assert scoped == ["cpu"]  # DenoiseLoop only, once
