"""ComfyUI workflows to sdflow workflows: ``convert`` (core.py) runs one handler per ComfyUI node
type; handlers live in ``handlers_<area>.py`` modules, registered with ``@handler("TypeName")``
(registry.py) and loaded automatically, so a new area is a new file."""

from __future__ import annotations

from sdflow.interop.comfy.context import ConversionError, Converter, Port, Problem
from sdflow.interop.comfy.core import Conversion, convert, promote_inputs, relative_image_dir
from sdflow.interop.comfy.registry import HANDLERS, handler, load_handlers

__all__ = [
    "HANDLERS",
    "Conversion",
    "ConversionError",
    "Converter",
    "Port",
    "Problem",
    "convert",
    "handler",
    "load_handlers",
    "promote_inputs",
    "relative_image_dir",
]

load_handlers()
