"""What a golden holds: a workflow's image outputs as float arrays, and the environment that made them."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np

from sdflow.errors import Location, UserError
from sdflow.graphs.model import Workflow
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import dumps
from sdflow.nodes import registry

PACKAGES = ("sdflow", "torch", "diffusers", "transformers", "numpy")


class GoldenError(UserError):
    """A golden cannot be recorded, found or read (exit code 2, like any user mistake)."""


def image_refs(workflow: Workflow) -> list[str]:
    """The 'node.output' refs a golden records for ``workflow``.

    Every Image- or Mask-typed link feeding one of the workflow's output nodes (e.g. the image a
    SaveImage writes); a workflow without output nodes records the Image and Mask outputs of its
    sink nodes instead, as the runner would compute them.
    """
    from sdflow.nodes.types import Image, Mask

    graph = validate(workflow)
    refs: list[str] = []
    outputs = [n for n, spec in workflow.nodes.items() if registry.get(spec.type).is_output]
    for node_id in outputs:
        for link in workflow.nodes[node_id].links().values():
            cls = registry.get(workflow.nodes[link.node].type)
            name = link.output if link.output is not None else next(iter(cls.outputs))
            if cls.outputs[name] in (Image, Mask) and f"{link.node}.{name}" not in refs:
                refs.append(f"{link.node}.{name}")
    if not outputs:
        for node_id in (n for n in workflow.nodes if graph.out_degree(n) == 0):
            cls = registry.get(workflow.nodes[node_id].type)
            refs += [f"{node_id}.{name}" for name, kind in cls.outputs.items() if kind in (Image, Mask)]
    if not refs:
        where = Location(workflow.file)
        raise GoldenError("the workflow has no Image or Mask output to record (feed one to SaveImage)", where)
    return refs


def run_images(
    runner: Any, workflow: Workflow, inputs: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Run ``workflow`` up to its recorded images (output nodes themselves do not run: no files)."""
    refs = image_refs(workflow)
    result = runner.run(workflow, inputs=dict(inputs or {}), outputs=[ref.partition(".")[0] for ref in refs])
    return {ref: to_array(result[ref]) for ref in refs}


def to_array(value: Any) -> np.ndarray:
    """An image as a float32 (batch, channels, height, width) array.

    Accepts our Image and Mask, a PIL picture (8-bit values are scaled to [0, 1]), and torch
    tensors or numpy arrays laid out (height, width), (channels, height, width) or
    (batch, channels, height, width).
    """
    from sdflow.nodes.types import Image, Mask

    if isinstance(value, Image):
        value = value.pixels
    elif isinstance(value, Mask):
        value = value.values
    if hasattr(value, "getbands"):  # a PIL picture
        array = np.asarray(value)
        scale = 255.0 if array.dtype == np.uint8 else 65535.0 if array.dtype == np.uint16 else 1.0
        array = array.astype(np.float32) / scale
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
    elif hasattr(value, "detach"):  # a torch tensor
        array = value.detach().to("cpu").float().numpy()
    elif isinstance(value, np.ndarray):
        array = value.astype(np.float32)
    else:
        raise TypeError(f"cannot compare a {type(value).__name__} as an image")
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"an image has 2 to 4 dimensions, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array, dtype=np.float32)


def environment(device: str | None, dtype: str | None) -> dict[str, Any]:
    """Versions, device, dtype and torch thread count: what can make floats drift between runs."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    versions["python"] = platform.python_version()
    return {"versions": versions, "device": device, "dtype": dtype, "threads": torch.get_num_threads()}


def environment_warnings(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per version, device or dtype that differs from the golden's (threads do not warn).

    A device or dtype recorded as None (unknown, e.g. an image checked from a test) is not compared.
    """
    lines = []
    old, new = recorded.get("versions", {}), current.get("versions", {})
    for package in sorted(set(old) | set(new)):
        if old.get(package) != new.get(package):
            lines.append(f"{package} {new.get(package, 'absent')} (golden: {old.get(package, 'absent')})")
    for key in ("device", "dtype"):
        if None not in (recorded.get(key), current.get(key)) and recorded.get(key) != current.get(key):
            lines.append(f"{key} {current.get(key)} (golden: {recorded.get(key)})")
    return lines


def workflow_hash(workflow: Workflow) -> str:
    """sha256 of the workflow's text (its YAML source, or its dump when built in Python)."""
    text = workflow.source if workflow.source is not None else dumps(workflow)
    return hashlib.sha256(text.encode()).hexdigest()
