"""Reading ``.gguf`` weight files (city96's quantized SD3 / Flux transformers) through the ``gguf``
package: the tensors' names and shapes without reading their data. Optional: ``pip install
sdflow[gguf]``; without it, a clear message says so."""

from __future__ import annotations

from pathlib import Path


class GgufUnavailable(ImportError):
    """The gguf package is not installed."""


def _reader(path: Path):
    try:
        from gguf import GGUFReader
    except ImportError:
        raise GgufUnavailable(
            f"'{path.name}' is a GGUF file: reading it needs the gguf package (pip install 'sdflow[gguf]')"
        ) from None
    try:
        return GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"'{path}' is not a readable GGUF file: {exc}") from None


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and logical shape (torch order: GGUF stores dimensions the other way round)."""
    return {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in _reader(path).tensors}


def quant_types(path: Path) -> dict[str, str]:
    """Each tensor's storage type name ("Q8_0", "F32"...)."""
    return {t.name: t.tensor_type.name for t in _reader(path).tensors}
