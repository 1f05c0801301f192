"""Recording and checking goldens: the steps the CLI, the pytest plugin and our own tests share."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from sdflow.golden import store
from sdflow.golden.capture import environment, environment_warnings, run_images, workflow_hash
from sdflow.golden.compare import Comparison, Thresholds, compare
from sdflow.golden.report import format_table, side_by_side, to_picture
from sdflow.golden.store import Golden
from sdflow.graphs.model import Workflow


@dataclass
class CheckResult:
    """The outcome of checking one golden: a comparison per output, warnings and written artifacts."""

    title: str
    golden: Golden
    comparisons: list[Comparison]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    artifacts: dict[str, dict[str, Path]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    def report(self) -> str:
        """Tables for every output, then the artifacts written and the notes (not the warnings)."""
        parts = []
        for comparison in self.comparisons:
            text = format_table(self.title, comparison)
            written = self.artifacts.get(comparison.name)
            if written:
                text += "\n" + "\n".join(f"  {kind}: {path}" for kind, path in written.items())
            parts.append(text)
        parts += [f"note: {note}" for note in self.notes]
        return "\n".join(parts)


def runner_environment(runner: Any) -> dict[str, Any]:
    """``environment()`` for a Runner's device and dtype."""
    from sdflow.runner.devices.device import dtype_name

    return environment(str(runner.device), dtype_name(runner.dtype))


def record_workflow(
    workflow: Workflow, path: Path | str, runner: Any, inputs: Mapping[str, Any] | None = None
) -> Golden:
    """Run ``workflow`` with ``inputs`` set and record its images as the golden at ``path``."""
    from sdflow.runner.core.plan import resolve_inputs

    given = dict(inputs or {})
    images = run_images(runner, workflow, given)
    meta = {
        "workflow": {"file": workflow.file, "sha256": workflow_hash(workflow)},
        "inputs": {"set": given, "resolved": resolve_inputs(workflow, given)},
        "environment": runner_environment(runner),
    }
    return store.save(path, images, meta)


def check_workflow(
    workflow: Workflow,
    golden: Golden,
    runner: Any,
    thresholds: Thresholds | None = None,
    inputs: Mapping[str, Any] | None = None,
    artifacts_dir: Path | None = None,
) -> CheckResult:
    """Re-run ``workflow`` with the golden's inputs (``inputs`` overlaid) and compare its images."""
    actual = run_images(runner, workflow, golden_inputs(golden, inputs))
    return judge(workflow, golden, actual, runner_environment(runner), thresholds, artifacts_dir)


def golden_inputs(golden: Golden, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The inputs a check runs with: those the golden was recorded with, ``inputs`` overlaid."""
    return {**golden.meta.get("inputs", {}).get("set", {}), **(inputs or {})}


def judge(
    workflow: Workflow,
    golden: Golden,
    actual: Mapping[str, np.ndarray],
    current_environment: Mapping[str, Any],
    thresholds: Thresholds | None = None,
    artifacts_dir: Path | None = None,
) -> CheckResult:
    """Compare images a run of ``workflow`` made with the golden's; note a workflow changed since."""
    title = workflow.file or golden.path.name
    result = check_images(
        title, golden, actual, thresholds or Thresholds(), current_environment, artifacts_dir
    )
    if golden.meta.get("workflow", {}).get("sha256") != workflow_hash(workflow):
        result.notes.append(f"{title} has changed since its golden was recorded")
    return result


def check_images(
    title: str,
    golden: Golden,
    actual: Mapping[str, np.ndarray],
    thresholds: Thresholds,
    current_environment: Mapping[str, Any],
    artifacts_dir: Path | None = None,
) -> CheckResult:
    """Compare each output with the golden's; write artifacts for failures, drop stale ones for passes."""
    folder = golden.path if artifacts_dir is None else Path(artifacts_dir) / golden.path.name
    comparisons = []
    result = CheckResult(title, golden, comparisons)
    for name in [*golden.images, *(n for n in actual if n not in golden.images)]:
        if name not in actual:
            comparison = Comparison(name, problem="the run no longer produces this output")
        elif name not in golden.images:
            comparison = Comparison(name, problem="a new output the golden does not have (update it)")
        else:
            comparison = compare(name, golden.images[name], actual[name], thresholds)
        comparisons.append(comparison)
        paths = store.artifact_paths(folder, name)
        if comparison.passed:
            for path in paths.values():
                path.unlink(missing_ok=True)
        elif name in actual:
            result.artifacts[name] = write_artifacts(paths, golden.images.get(name), actual[name])
    result.warnings = environment_warnings(golden.environment, current_environment)
    return result


def write_artifacts(paths: dict[str, Path], golden: np.ndarray | None, actual: np.ndarray) -> dict[str, Path]:
    """The actual image, and when shapes allow, the diff heat map and golden | actual | diff."""
    from sdflow.golden.report import diff_array

    pictures = {"actual": to_picture(actual)}
    if golden is not None and golden.shape == actual.shape:
        pictures["diff"] = to_picture(diff_array(golden, actual)[0])
        pictures["side-by-side"] = side_by_side(golden, actual)
    written = {}
    for kind, picture in pictures.items():
        _write_png(picture, paths[kind])
        written[kind] = paths[kind]
    return written


def _write_png(picture: PILImage.Image, path: Path) -> None:
    """Write a PNG atomically, replacing an older artifact of the same name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as handle:
            picture.save(handle, format="PNG")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
