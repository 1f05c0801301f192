"""Copy-on-write weight patches: a model that shares every tensor with its base except the patched ones.

A patched model is a new tree of module objects along the paths to the patched layers only; every
other sub-module (and every parameter and buffer not patched) is the base's own object. The base model,
which the model cache hands to other nodes and runs, is never modified, and memory grows by the
patched weights alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch

Delta = Callable[[torch.Tensor], torch.Tensor]  # the base weight -> its float32 update, on its device


def patched_copy(root: torch.nn.Module, deltas: dict[str, Delta], strength: float) -> torch.nn.Module:
    """``root`` with ``weight += strength * delta(weight)`` in each module named in ``deltas``
    (computed in float32, stored in the weight's dtype), leaving ``root`` untouched."""
    new_root = shallow(root)
    fresh = {id(new_root)}  # module objects this copy owns (safe to edit)
    for path, delta in deltas.items():
        module = owned(new_root, fresh, path)
        weight = module._parameters["weight"]
        value = (weight.detach().float() + strength * delta(weight.detach())).to(weight.dtype)
        module._parameters["weight"] = torch.nn.Parameter(value, requires_grad=False)
    return new_root


def shallow(module: torch.nn.Module) -> torch.nn.Module:
    """A new module object sharing ``module``'s children, parameters and buffers (in new dicts, so
    replacing one in the copy leaves the original's in place), and its hooks in hook tables of its own:
    a hook added later to either stays on that one (transformers 5 adds its hidden-state recorders to
    a model on its first run; shared tables would give a base and its patched copy each other's, and
    both would record every layer twice)."""
    twin = copy.copy(module)
    twin._modules = copy.copy(module._modules)
    twin._parameters = copy.copy(module._parameters)
    for name, table in vars(module).items():
        if name.startswith("_") and "hooks" in name and isinstance(table, dict):
            setattr(twin, name, copy.copy(table))
    return twin


def owned(root: torch.nn.Module, fresh: set[int], name: str) -> torch.nn.Module:
    """The sub-module ``name`` of the copy ``root``, copied (``shallow``) along its path unless this
    copy owns it already (ids in ``fresh``): safe to change without touching the original."""
    module = root
    for part in name.split(".") if name else []:
        child = module._modules[part]
        if id(child) not in fresh:
            child = shallow(child)
            fresh.add(id(child))
            module._modules[part] = child
        module = child
    return module


def hookable_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A ``shallow`` copy, whose hook tables are its own: hooks added to it leave ``module`` alone."""
    return shallow(module)
