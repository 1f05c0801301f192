"""Upscale models (ESRGAN, RealESRGAN, Compact, SwinIR, HAT, DAT, SPAN...) read through spandrel.

spandrel is an optional dependency (``pip install 'sdflow[upscale]'``). Its package imports
torchvision, yet only two of its architectures (LaMa inpainting, RestoreFormer face restoration) call
it; where torchvision is absent or does not import beside the installed torch (a CPU torch next to
PyPI's CUDA torchvision), a stand-in lets spandrel import, and those two refuse to run."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdflow.models.weights import WeightFileError, is_pickle, pickle_refusal, read_all, unpickled

BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "builtin"
BUILTIN_PREFIX = "builtin:"
EXTRA = "pip install 'sdflow[upscale]'"


class UpscaleModelError(ValueError):
    """An upscale model file that cannot be used: unknown to spandrel, not an image model, unreadable."""


@dataclass(frozen=True)
class Upscaler:
    """A loaded upscale model: spandrel's ImageModelDescriptor with its scale and architecture name."""

    descriptor: Any  # spandrel.ImageModelDescriptor (spandrel is imported only when a model is loaded)
    scale: int
    architecture: str
    input_channels: int
    output_channels: int


def builtin_path(spec: str) -> Path | None:
    """The file of a built-in upscaler ('builtin:tiny-upscale-2x'), or None for other specs."""
    if not spec.startswith(BUILTIN_PREFIX):
        return None
    return BUILTIN_ROOT / f"{spec[len(BUILTIN_PREFIX) :]}.safetensors"


def spandrel_module() -> types.ModuleType:
    """spandrel, imported (with the torchvision stand-in where torchvision does not import)."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    if importlib.util.find_spec("spandrel") is None:
        raise UpscaleModelError(f"upscale models need spandrel, which is not installed: {EXTRA}")
    if _torchvision_imports():
        return importlib.import_module("spandrel")
    names = _install_torchvision_standin()
    try:  # spandrel keeps what it imported; nothing else may see the stand-in (diffusers probes torchvision)
        return importlib.import_module("spandrel")
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _torchvision_imports() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.transforms.functional")
    except (ImportError, RuntimeError):  # RuntimeError: 'operator torchvision::nms does not exist'
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def _install_torchvision_standin() -> list[str]:
    """Modules named torchvision.transforms.functional whose functions refuse to run (spandrel reads
    three names from it at import; only LaMa and RestoreFormer call them)."""

    def unavailable(*args: object, **kwargs: object) -> None:
        raise UpscaleModelError(
            "this model needs torchvision, which is missing or does not import beside this torch: "
            "install the torchvision release built for it"
        )

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.rotate = unavailable  # type: ignore[attr-defined]
    functional.normalize = unavailable  # type: ignore[attr-defined]
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear")  # type: ignore[attr-defined]
    package.__path__ = []  # type: ignore[attr-defined]
    transforms.__path__ = []  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    modules = {"torchvision": package, "torchvision.transforms": transforms, functional.__name__: functional}
    sys.modules.update(modules)
    return list(modules)


def model_dtype(descriptor: Any, wanted: torch.dtype) -> torch.dtype:
    """``wanted`` when the architecture supports it (spandrel says which do half or bfloat16), else fp32."""
    if wanted == torch.float16 and descriptor.supports_half:
        return wanted
    if wanted == torch.bfloat16 and descriptor.supports_bfloat16:
        return wanted
    return torch.float32


def load(path: Path, device: torch.device, dtype: torch.dtype, allow_pickle: bool = False) -> Upscaler:
    """The upscale model in ``path`` on ``device``, in ``dtype`` where its architecture supports it
    (pickles only with ``allow_pickle``, then read weights-only)."""
    spandrel = spandrel_module()
    state = spandrel.canonicalize_state_dict(_state_dict(path, allow_pickle))
    if not state:
        raise UpscaleModelError("the file holds no tensors")
    try:
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise UpscaleModelError(
            f"spandrel {spandrel.__version__} knows no upscale architecture with these weights "
            f"({len(state)} tensors, e.g. '{next(iter(state))}')"
        ) from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise UpscaleModelError(
            f"a {descriptor.architecture.name} model ({descriptor.purpose}) takes more than an image: "
            "not an upscaler"
        )
    descriptor.to(device=device, dtype=model_dtype(descriptor, dtype)).eval()
    return Upscaler(
        descriptor,
        int(descriptor.scale),
        str(descriptor.architecture.name),
        int(descriptor.input_channels),
        int(descriptor.output_channels),
    )


def _state_dict(path: Path, allow_pickle: bool) -> dict[str, Any]:
    """The file's tensors: safetensors read by sdflow's reader, a pickle (only with the opt-in) by
    torch's weights-only unpickler, nesting such as RealESRGAN's 'params_ema' kept for spandrel."""
    if not is_pickle(path):
        try:
            return read_all(path)[0]
        except WeightFileError as exc:
            raise UpscaleModelError(str(exc)) from None
    if not allow_pickle:
        raise UpscaleModelError(pickle_refusal(path))
    try:
        return unpickled(path)
    except WeightFileError as exc:
        raise UpscaleModelError(str(exc)) from None


def describe(path: Path) -> str:
    """'ESRGAN 4x' for `sdflow models upscale_models` (no model is built for pickles: named only)."""
    if path.suffix.lower() != ".safetensors":
        return "pickle (needs allow_pickle)"
    try:
        upscaler = load(path, torch.device("cpu"), torch.float32)
    except (UpscaleModelError, OSError) as exc:
        return f"unusable: {exc}"
    return f"{upscaler.architecture} {upscaler.scale}x"
