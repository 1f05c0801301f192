"""Choosing the dtype safely: 'auto' takes what the hardware computes fast, measured; an explicit
half-precision choice that will be slow on this CPU comes with a one-line warning and its reason.

Half precision on a CPU is only fast where oneDNN has native kernels (AVX512-BF16/AMX for bf16,
AVX512-FP16/AMX-FP16 for fp16); elsewhere it is emulated and one UNet call can take 40x longer.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import time
from dataclasses import dataclass

import torch

from sdflow import kept, lean

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHOICES = ("auto", *DTYPES)
FASTER = 1.2  # auto takes bf16 on a CPU only when the probe runs at least this much faster than fp32


class SlowDtypeWarning(UserWarning):
    """The dtype asked for is emulated or measured slower than fp32 on this device."""


@dataclass(frozen=True)
class DtypeChoice:
    """The dtype a runner uses, why, and a warning when an explicit choice will be slow."""

    dtype: torch.dtype
    reason: str
    warning: str | None = None

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def choose_dtype(device: torch.device, name: str | None = "auto") -> DtypeChoice:
    """``name`` (auto, fp32, fp16, bf16; None = auto) resolved for ``device``.

    auto: fp16 on CUDA; on a CPU bf16 where it is native and the probe measures it faster, else
    fp32; fp32 on MPS and anything else. ValueError for an unknown name."""
    name = name or "auto"
    if name not in CHOICES:
        raise ValueError(f"unknown dtype '{name}' (expected one of {', '.join(CHOICES)})")
    if name != "auto":
        dtype = DTYPES[name]
        warning = _cpu_warning(dtype) if device.type == "cpu" and dtype != torch.float32 else None
        return DtypeChoice(dtype, "asked for", warning)
    if device.type == "cuda":
        return DtypeChoice(torch.float16, "auto: fp16 on CUDA")
    if device.type == "cpu" and native_on_cpu(torch.bfloat16):
        speedup = cpu_speedup(torch.bfloat16)
        if speedup >= FASTER:
            return DtypeChoice(torch.bfloat16, f"auto: native bf16, measured {speedup:.1f}x faster than fp32")
        return DtypeChoice(torch.float32, f"auto: native bf16 measured only {speedup:.2f}x fp32's speed")
    return DtypeChoice(torch.float32, f"auto: fp32 on {device.type}")


def fixed_dtype(device: torch.device) -> str:
    """The dtype that does not depend on the CPU model: fp16 on CUDA, fp32 elsewhere (goldens)."""
    return "fp16" if device.type == "cuda" else "fp32"


def native_on_cpu(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native kernels for ``dtype`` on this CPU."""
    mkldnn = torch.ops.mkldnn
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}
    check = getattr(mkldnn, probe.get(dtype, ""), None)
    return bool(check is not None and check())


def _cpu_warning(dtype: torch.dtype) -> str | None:
    """One line saying why ``dtype`` will be slow on this CPU, or None when it is not."""
    name = dtype_name(dtype)
    speedup = cpu_speedup(dtype)
    if speedup >= 1.0 and native_on_cpu(dtype):
        return None
    slower = f"measured {1 / speedup:.1f}x slower than fp32 on a probe convolution"
    if not native_on_cpu(dtype):
        why = f"this CPU has no native {name} (oneDNN reports no {name} support), so it is emulated"
        return f"--dtype {name}: {why}: {slower}; use --dtype auto or fp32"
    return f"--dtype {name}: {slower} on this CPU; use --dtype auto or fp32"


@functools.lru_cache(maxsize=4)
def cpu_speedup(dtype: torch.dtype, repeats: int = 7) -> float:
    """fp32 time / ``dtype`` time of a UNet-sized convolution + matmul on one CPU thread, alternating
    the two and keeping each one's fastest run, so a busy machine disturbs both alike (about 0.1 s,
    once per process; with the `sdflow` command's lean imports, once per CPU model and torch version,
    kept by sdflow.lean). Above 1 means ``dtype`` is faster."""
    if lean.active():
        key = f"cpu_speedup {dtype_name(dtype)} x{repeats} torch {torch.__version__} cpu {_cpu_model()}"
        return kept.kept_figure(key, lambda: _probed_speedup(dtype, repeats))
    return _probed_speedup(dtype, repeats)


def _cpu_model() -> str:
    """This CPU's model and feature flags, hashed (what the probe's figure depends on)."""
    described = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            lines = [line for line in info if line.startswith(("model name", "flags"))]
        described = "".join(dict.fromkeys(lines))  # each distinct line once
    except OSError:
        pass
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def _probed_speedup(dtype: torch.dtype, repeats: int) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # kernel speed per core: threads waiting for a busy core would decide
    try:
        probes = {d: _Probe(d) for d in (torch.float32, dtype)}
        best = dict.fromkeys(probes, float("inf"))
        for _ in range(repeats):
            for kind, probe in probes.items():
                best[kind] = min(best[kind], probe.seconds())
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / best[dtype]


class _Probe:
    """A UNet-like slice of work in one dtype: a 3x3 convolution and a matrix product."""

    def __init__(self, dtype: torch.dtype) -> None:
        generator = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(320, 320, 3, padding=1).to(dtype)  # SD's first UNet block
        self.x = torch.randn(1, 320, 16, 16, generator=generator).to(dtype)
        self.tokens = torch.randn(256, 320, generator=generator).to(dtype)
        self.weight = torch.randn(320, 320, generator=generator).to(dtype)
        with torch.inference_mode():
            self.conv(self.x)  # the first call selects kernels

    def seconds(self) -> float:
        with torch.inference_mode():
            started = time.perf_counter()
            self.conv(self.x)
            self.tokens @ self.weight
            return time.perf_counter() - started
