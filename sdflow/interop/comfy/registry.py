"""The table of ComfyUI node handlers. A handler module registers its node types with
``@handler("TypeName")``; every module named ``handlers_*.py`` in this package is loaded, so a new
area (ControlNet, upscalers, new model families) is a new file, with no list to edit."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path

from sdflow.errors import SdflowError
from sdflow.formats.comfy_json import ComfyNode
from sdflow.interop.comfy.context import Converter, Port

Handler = Callable[[Converter, ComfyNode], list[Port]]
HANDLERS: dict[str, Handler] = {}
PREFIX = "handlers_"


def handler(*type_names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the converter of the ComfyUI node types named."""

    def register(function: Handler) -> Handler:
        for name in type_names:
            if name in HANDLERS and HANDLERS[name] is not function:
                raise SdflowError(f"two handlers for ComfyUI node {name}: {function.__module__}")
            HANDLERS[name] = function
        return function

    return register


def load_handlers() -> dict[str, Handler]:
    """Import every ``handlers_*`` module of this package (each registers its node types)."""
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name.startswith(PREFIX):
            importlib.import_module(f"{package}.{module.name}")
    return HANDLERS
