"""Weight files: a cheap safetensors header check, the pickle rule, and reading one tensor at a time.

A ``.safetensors`` file is memory-mapped and each tensor either used in place or converted once
into the memory the model keeps, so loading never holds the weights twice. Pickle files (``.ckpt``,
``.pt``, ``.bin``, ``.pth``) can run code when unpickled: they are refused unless the caller opts in,
and then read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PICKLE_SUFFIXES = (".ckpt", ".pt", ".bin", ".pth")
SAFE_SUFFIXES = (".safetensors",)
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit
ALIGNMENT = 64  # bytes; torch's CPU allocator's alignment, which BLAS kernels' results can depend on

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
for _name, _attr in (("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2")):
    if hasattr(torch, _attr):
        _DTYPES[_name] = getattr(torch, _attr)


class WeightFileError(ValueError):
    """A weight file that cannot be read: corrupt, truncated, or a pickle without the opt-in."""


def pickle_refusal(path: Path) -> str:
    """Why a pickle file is refused, and how to allow it."""
    return (
        f"'{path.name}' is a pickle file ({path.suffix}): loading a pickle can run arbitrary code hidden "
        "in it, so sdflow refuses it by default. Prefer a .safetensors copy; if you trust this file, set "
        "'allow_pickle: true' on the node or pass --allow-pickle (it is then read with "
        "torch.load(weights_only=True))"
    )


def is_pickle(path: Path) -> bool:
    return path.suffix.lower() in PICKLE_SUFFIXES


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int


@dataclass(frozen=True)
class Header:
    """A safetensors header: tensors by name, the metadata strings, the file's path."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.tensors.items()}


def read_header(path: Path) -> Header:
    """Parse and check a safetensors header without reading the tensors (WeightFileError if bad)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise WeightFileError(f"'{path}' is not a safetensors file: it is only {size} bytes long")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise WeightFileError(
                f"'{path}' is not a valid safetensors file: its header claims {length} bytes but the "
                f"file has {size} (truncated or not safetensors)"
            )
        raw = file.read(length)
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightFileError(
            f"'{path}' is not a valid safetensors file: its header is not JSON ({exc})"
        ) from None
    if not isinstance(document, dict):
        raise WeightFileError(f"'{path}' is not a valid safetensors file: its header is not a mapping")
    metadata = document.pop("__metadata__", None) or {}
    base = 8 + length
    tensors = {name: _tensor_info(path, name, entry, base, size) for name, entry in document.items()}
    return Header(path, tensors, {str(k): str(v) for k, v in metadata.items()})


def _tensor_info(path: Path, name: str, entry: Any, base: int, size: int) -> TensorInfo:
    try:
        dtype = _DTYPES[entry["dtype"]]
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightFileError(f"'{path}': tensor '{name}' has a malformed header entry ({exc})") from None
    expected = math.prod(shape) * dtype.itemsize
    if end - begin != expected or begin < 0:
        raise WeightFileError(f"'{path}': tensor '{name}' has {end - begin} bytes for shape {list(shape)}")
    if base + end > size:
        raise WeightFileError(
            f"'{path}' is truncated: tensor '{name}' ends at byte {base + end}, the file has {size} bytes"
        )
    return TensorInfo(dtype, shape, base + begin, base + end)


class WeightReader:
    """Reads the tensors of one weight file by name.

    A safetensors file is memory-mapped copy-on-write. A tensor wanted on the CPU in the file's own
    dtype whose data start on a 64-byte boundary is the mapped pages themselves (no copy; read lazily
    on first use; writes stay private). Any other tensor (an unaligned one is copied: see
    ``is_aligned``) is converted from the mapping into its final tensor, and the mapped pages it
    came from are released at once, so the file's pages and the model never add up in memory."""

    def __init__(self, path: Path, allow_pickle: bool = False) -> None:
        self.path = path
        self._state: dict[str, torch.Tensor] | None = None
        self._map: mmap.mmap | None = None
        if is_pickle(path):
            if not allow_pickle:
                raise WeightFileError(pickle_refusal(path))
            self._state = _load_pickle(path)
            self.shapes = {k: tuple(v.shape) for k, v in self._state.items()}
            self.metadata: dict[str, str] = {}
        else:
            header = read_header(path)
            self._header = header
            self.shapes = header.shapes()
            self.metadata = header.metadata

    def __enter__(self) -> WeightReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the file (tensors still viewing the mapping keep it alive until they go)."""
        self._map = None
        self._state = None

    def read(
        self,
        name: str,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        keep_unaligned: bool = False,
    ) -> torch.Tensor:
        """Tensor ``name`` on ``device`` in ``dtype`` (default: the file's). ``keep_unaligned``: an
        unaligned tensor wanted as it is stays the mapped pages too (for buffers that no matrix
        product reads, such as a position-embedding table of which a run reads a crop)."""
        device = torch.device(device)
        if self._state is not None:
            return self._state[name].to(device=device, dtype=dtype)
        info = self._header.tensors[name]
        mapped = self._mapped(info)
        if device.type == "cpu" and dtype in (None, info.dtype):
            if keep_unaligned or is_aligned(mapped):
                return mapped
            tensor = mapped.clone()
        else:
            tensor = mapped.to(device=device, dtype=dtype)
        if tensor.data_ptr() != mapped.data_ptr():
            self._release(info)
        return tensor

    def release(self, name: str) -> None:
        """Drop the pages of tensor ``name`` once the caller has copied it (safe: they were only read)."""
        if self._state is None:
            self._release(self._header.tensors[name])

    def _mapped(self, info: TensorInfo) -> torch.Tensor:
        if info.end == info.start:
            return torch.empty(info.shape, dtype=info.dtype)
        if self._map is None:
            with open(self.path, "rb") as file:
                self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
        count = math.prod(info.shape)
        flat = torch.frombuffer(self._map, dtype=info.dtype, count=count, offset=info.start)
        return flat.view(info.shape)

    def _release(self, info: TensorInfo) -> None:
        """Drop the whole pages of a converted tensor from this process (they were only read)."""
        if self._map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = -(-info.start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = info.end // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)


def is_aligned(tensor: torch.Tensor) -> bool:
    """Whether a CPU tensor's data start on an ``ALIGNMENT`` boundary, as freshly allocated ones do.

    MKL's sgemm (like most BLAS without a reproducibility mode) may split its loops by the
    operands' alignment, so the same weights at another address can give other low bits on some
    CPUs (AVX2 without AVX-512): weights are kept aligned so where they came from never matters."""
    return tensor.device.type != "cpu" or tensor.numel() == 0 or tensor.data_ptr() % ALIGNMENT == 0


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, with torch's restricted unpickler (tensors and plain containers only)."""
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise WeightFileError(f"'{path}' could not be read as a weights-only pickle: {exc}") from None
    while isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightFileError(f"'{path}' holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def unpickled(path: Path) -> dict[Any, Any]:
    """A pickle's whole dict, nesting kept (hypernetworks, RealESRGAN's 'params_ema'), read by torch's
    weights-only unpickler (tensors and plain containers only); WeightFileError for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise WeightFileError(f"'{path.name}' could not be read as a weights-only pickle: {exc}") from None
    if not isinstance(state, dict):
        raise WeightFileError(f"'{path.name}' holds a {type(state).__name__}, not a state dict")
    return state


def read_all(path: Path, allow_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(every tensor on the CPU, the header metadata) of a small weight file such as a LoRA or a VAE."""
    with WeightReader(path, allow_pickle) as reader:
        return {name: reader.read(name) for name in reader.shapes}, dict(reader.metadata)
