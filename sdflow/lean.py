"""Leaner imports for a process the `sdflow` command started: what diffusers and transformers import
only because it is installed, though no node of the workflow uses it, is kept out or put off.

- peft (about 0.5 s): diffusers' and transformers' own LoRA adapters import it whenever it is
  installed. sdflow patches LoRA weights itself (sdflow.models.lora) and never calls those adapters,
  so the process sees peft as absent, as diffusers does where it is not installed.
- scipy (about 0.6 s with numpy.ma): a dozen diffusers schedulers ``import scipy.stats`` (or
  ``scipy.integrate``) at the top, for the beta sigmas and LMS, and diffusers imports them all. In
  this process such an import gives a stand-in that imports the real module at its first attribute
  read, so only a workflow that uses them pays. transformers' object-detection losses take
  ``scipy.optimize`` names at import when ``is_scipy_available()`` says so; that answer is kept
  once asked, and is asked first while scipy is hidden (no sdflow node uses those losses).
- requests (about 0.2 s with urllib3): diffusers' loading helpers ``import requests`` for URLs, which
  sdflow never passes them (no downloads at run time); put off like scipy's modules.

- torch's naming of each custom op's registering line (about 0.15 s): read from the frame instead
  of ``inspect.getframeinfo`` (``_tune_torch_library``; the same "file:line").
- The CPU's bf16 probe (about 0.15 s, sdflow.runner.devices.dtypes.cpu_speedup) is kept in
  ``$XDG_CACHE_HOME/sdflow/figures.json`` per CPU model and torch version.
- The garbage collector (about 2 s of CPU): importing these packages makes some 700,000 objects,
  and each full collection on the way scans all of them again (seven of them for the shipped
  example). It is paused while the command imports, and goes on (``settle``) before the first node
  runs, the objects made so far frozen (``gc.freeze``): they are modules, classes and functions that
  live as long as the process.

Only the `sdflow` command turns this on (``sdflow.cli`` when ``started_as_command``, before its own
heavy imports, and ``sdflow.cli.console``), never a library import: tests and
programs that use diffusers' peft integration beside sdflow keep it. ``SDFLOW_FULL_IMPORTS=1`` turns
it off.
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import inspect
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

OFF_SWITCH = "SDFLOW_FULL_IMPORTS"
HIDDEN = ("peft",)  # absent for the whole process
DEFERRED = ("scipy.stats", "scipy.integrate", "requests")  # imported for real at the first attribute read
ASKED_WITHOUT = ("scipy",)  # absent only while transformers first asks for it
TRANSFORMERS_CHECKS = "transformers.utils.import_utils"

_REAL_DUNDERS = ("__path__", "__all__")  # read from the real module once set up
_enabled = False
_gc_paused = False


class _Deferred(types.ModuleType):
    """Stands in for a module in sys.modules until an attribute is read, then imports the real one
    (which takes its place in sys.modules and on its parent package) and answers from it."""

    def __getattr__(self, name: str) -> Any:
        set_up = sys.modules.get(self.__name__) is self
        if name.startswith("__") and (name not in _REAL_DUNDERS or not set_up):
            raise AttributeError(name)  # the import machinery setting the stand-in up
        return getattr(_load_real(self.__name__), name)

    def __dir__(self) -> list[str]:
        return dir(_load_real(self.__name__))


def _load_real(fullname: str) -> types.ModuleType:
    module = sys.modules.get(fullname)
    if isinstance(module, _Deferred):
        del sys.modules[fullname]
        _FINDER.passing.add(fullname)
        try:
            module = importlib.import_module(fullname)
        finally:
            _FINDER.passing.discard(fullname)
    assert module is not None
    return module


class _LeanFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers the first import of a DEFERRED module with a ``_Deferred`` stand-in, and tunes
    transformers' import checks once their module has run (``_tune_transformers``)."""

    def __init__(self) -> None:
        self.passing: set[str] = set()

    def _real_spec(self, fullname: str) -> importlib.machinery.ModuleSpec | None:
        self.passing.add(fullname)  # the other finders answer
        try:
            return importlib.util.find_spec(fullname)
        finally:
            self.passing.discard(fullname)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.passing:
            return None
        if fullname in DEFERRED:
            real = self._real_spec(fullname)
            return None if real is None else importlib.machinery.ModuleSpec(fullname, self)
        if fullname in TUNED:
            real = self._real_spec(fullname)
            if real is not None and isinstance(real.loader, importlib.abc.Loader):
                real.loader = _Tuned(real.loader, TUNED[fullname])
            return real
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Deferred(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _Tuned(importlib.abc.Loader):
    """A TUNED module, loaded as usual, then tuned before anything uses it."""

    def __init__(self, loader: importlib.abc.Loader, tune: Callable[[types.ModuleType], None]) -> None:
        self.loader = loader
        self.tune = tune

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        self.tune(module)


def _tune_transformers(checks: types.ModuleType) -> None:
    """Settle transformers' scipy answer with scipy hidden, and keep its scan of the model folders
    (``transformers_index``)."""
    present = {name: sys.modules.get(name) for name in ASKED_WITHOUT}
    for name in ASKED_WITHOUT:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        checks.is_scipy_available()
    finally:
        for name, module in present.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module
    from sdflow import transformers_index

    transformers_index.install(checks)


def _tune_torch_library(utils: types.ModuleType) -> None:
    """torch names the registering line of each of its custom ops' fake kernels (136 for the shipped
    example, most from diffusers and transformers) by ``inspect.getframeinfo``, which also reads the
    source around that line and searches every module for the file's: about 0.15 s. The same
    "file:line" straight from the frame."""
    if not callable(getattr(utils, "get_source", None)):
        return

    def get_source(stacklevel: int) -> str:
        frame = sys._getframe(stacklevel)
        filename = frame.f_code.co_filename
        if filename.endswith(tuple(importlib.machinery.BYTECODE_SUFFIXES)):
            return f"{inspect.getframeinfo(frame).filename}:{frame.f_lineno}"  # as torch's own
        return f"{filename}:{frame.f_lineno}"

    utils.get_source = get_source


TUNED: dict[str, Callable[[types.ModuleType], None]] = {
    TRANSFORMERS_CHECKS: _tune_transformers,
    "torch._library.utils": _tune_torch_library,
}
_FINDER = _LeanFinder()


def started_as_command() -> bool:
    """Whether this process is the `sdflow` command, its package still being imported: the console
    script, or ``python -m sdflow.cli`` (whose ``sys.argv[0]`` is "-m" while the package loads)."""
    first = os.path.basename(sys.argv[0]) if sys.argv else ""
    if first in ("sdflow", "sdflow.exe", "sdflow-script.py"):
        return True
    given = list(getattr(sys, "orig_argv", ()))
    return first == "-m" and given[given.index("-m") + 1 : given.index("-m") + 2] == ["sdflow.cli"]


def enable() -> None:
    """Turn the lean imports on for this process (before diffusers or transformers is imported)."""
    global _enabled
    if os.environ.get(OFF_SWITCH, "") not in ("", "0") or _enabled:
        return
    if "diffusers" in sys.modules or "transformers" in sys.modules:
        return
    _enabled = True
    global _gc_paused
    if gc.isenabled():
        gc.disable()
        _gc_paused = True
    for name in HIDDEN:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # import machinery: "not installed"
    sys.meta_path.insert(0, _FINDER)


def settle() -> None:
    """Once the command's imports are done (before the first node runs): the garbage collector, paused
    since ``enable``, goes on, with what exists now kept out of its scans (``gc.freeze``)."""
    global _gc_paused
    if _gc_paused:
        _gc_paused = False
        gc.freeze()
        gc.enable()


def active() -> bool:
    """Whether this process runs with the lean imports."""
    return _enabled
