"""The dtype policy: 'auto' takes fast dtypes only, an explicit slow one warns before anything runs."""

from __future__ import annotations

import warnings

import pytest
import torch

from sdflow.cli import main as cli
from sdflow.runner.core.executor import Runner
from sdflow.runner.devices import dtypes
from sdflow.runner.devices.dtypes import SlowDtypeWarning, choose_dtype

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU like the one issue 12 measured: bf16 emulated, 40x slower than fp32."""
    monkeypatch.setattr(dtypes, "native_on_cpu", lambda dtype: False)
    monkeypatch.setattr(dtypes, "cpu_speedup", lambda dtype: 1 / 40)


@pytest.fixture
def cpu_with_fast_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "native_on_cpu", lambda dtype: dtype == torch.bfloat16)
    monkeypatch.setattr(dtypes, "cpu_speedup", lambda dtype: 4.0 if dtype == torch.bfloat16 else 0.5)


def test_auto_is_fp16_on_cuda() -> None:
    assert choose_dtype(CUDA, "auto").dtype == torch.float16
    assert choose_dtype(CUDA, None).dtype == torch.float16


def test_auto_is_fp32_on_a_cpu_without_native_bf16(cpu_without_native_bf16: None) -> None:
    choice = choose_dtype(CPU, "auto")
    assert choice.dtype == torch.float32 and choice.warning is None


def test_auto_is_bf16_on_a_cpu_where_it_is_native_and_measured_faster(cpu_with_fast_bf16: None) -> None:
    choice = choose_dtype(CPU, "auto")
    assert choice.dtype == torch.bfloat16
    assert "4.0x faster" in choice.reason


def test_auto_stays_fp32_when_native_bf16_measures_no_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dtypes, "native_on_cpu", lambda dtype: True)
    monkeypatch.setattr(dtypes, "cpu_speedup", lambda dtype: 1.05)
    assert choose_dtype(CPU, "auto").dtype == torch.float32


def test_auto_is_fp32_on_mps() -> None:
    assert choose_dtype(MPS, "auto").dtype == torch.float32


def test_explicit_bf16_on_a_cpu_without_native_bf16_says_why(cpu_without_native_bf16: None) -> None:
    choice = choose_dtype(CPU, "bf16")
    assert choice.dtype == torch.bfloat16
    assert choice.warning is not None and "\n" not in choice.warning
    assert "no native bf16" in choice.warning and "40.0x slower" in choice.warning


def test_explicit_bf16_where_it_is_fast_does_not_warn(cpu_with_fast_bf16: None) -> None:
    assert choose_dtype(CPU, "bf16").warning is None


def test_explicit_fp16_measured_slower_on_the_cpu_warns(cpu_with_fast_bf16: None) -> None:
    warning = choose_dtype(CPU, "fp16").warning
    assert warning is not None and "2.0x slower than fp32" in warning


def test_the_runner_warns_before_it_loads_anything(cpu_without_native_bf16: None) -> None:
    with pytest.warns(SlowDtypeWarning, match="no native bf16"):
        runner = Runner(device="cpu", dtype="bf16")
    assert len(runner.models) == 0 and runner.dtype == torch.bfloat16


def test_an_fp32_runner_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowDtypeWarning)
        Runner(device="cpu", dtype="fp32")


def test_the_command_line_prints_one_warning_line_first(
    cpu_without_native_bf16: None, tmp_path, capsys
) -> None:
    workflow = tmp_path / "w.yaml"
    workflow.write_text("version: 1\nnodes:\n  empty: {type: EmptyLatent, width: 8, height: 8}\n")
    assert cli(["run", str(workflow), "--dtype", "bf16", "--output-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("warning: --dtype bf16: ") and "emulated" in lines[0]
    assert sum("warning" in line for line in lines) == 1


def test_the_probe_measures_a_positive_speed_ratio() -> None:
    assert dtypes.cpu_speedup(torch.float32) > 0
