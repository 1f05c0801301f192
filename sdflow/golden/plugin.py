"""The pytest plugin: a `golden` fixture that checks images against recorded goldens.

Registered through the `pytest11` entry point, so any project with sdflow installed has it. Run
`pytest --update-goldens` to record (or re-record) every golden the tests check.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from sdflow.golden.compare import DEFAULT_MAX_ABS, DEFAULT_PSNR, DEFAULT_SSIM, Thresholds

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
_RECORDED = pytest.StashKey[dict[str, str]]()


class GoldenEnvironmentWarning(UserWarning):
    """The golden was recorded with other library versions, device or dtype than this run uses."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdflow", "sdflow golden images")
    group.addoption(
        "--update-goldens",
        action="store_true",
        default=False,
        help="record the images tests check with the `golden` fixture instead of comparing them",
    )
    parser.addini("golden_dir", "folder of goldens, relative to the rootdir", default="goldens")
    parser.addini(
        "golden_artifacts_dir", "where failed checks write images (default: beside each golden)", default=""
    )
    parser.addini("golden_max_abs", "largest allowed |actual - golden|", default=str(DEFAULT_MAX_ABS))
    parser.addini("golden_psnr", "lowest allowed PSNR in dB", default=str(DEFAULT_PSNR))
    parser.addini("golden_ssim", "lowest allowed SSIM", default=str(DEFAULT_SSIM))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDED] = {}


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    recorded = config.stash.get(_RECORDED, {})
    if recorded:
        terminalreporter.write_sep("-", f"sdflow: recorded {len(recorded)} golden(s)")
        for path in recorded:
            terminalreporter.write_line(path)


class GoldenChecker:
    """What the `golden` fixture gives a test: check (or, with --update-goldens, record) images."""

    def __init__(
        self,
        root: Path,
        update: bool,
        thresholds: Thresholds,
        artifacts_dir: Path | None,
        recorded: dict[str, str],
        test_id: str,
    ) -> None:
        self.root = root
        self.update = update
        self.thresholds = thresholds
        self.artifacts_dir = artifacts_dir
        self._recorded = recorded
        self._test_id = test_id

    def path(self, name: str) -> Path:
        """The folder of golden ``name`` ('a' or 'group/a': letters, digits, _ . - and /)."""
        if not _NAME.match(name) or ".." in name.split("/"):
            raise ValueError(f"'{name}' cannot name a golden (letters, digits, _ . - and / between parts)")
        return self.root / name

    def check(self, name: str, image: Any, **thresholds: float) -> None:
        """Check one image (our Image or Mask, a PIL picture, a tensor or array) against golden ``name``."""
        self.check_images(name, {"image": image}, **thresholds)

    def check_run(
        self,
        name: str,
        result: Any,
        workflow: Any = None,
        outputs: Iterable[str] | None = None,
        **thresholds: float,
    ) -> None:
        """Check a RunResult's images against golden ``name``.

        Which images: ``outputs`` ('node.output' refs) if given; else, with ``workflow``, the ones
        `sdflow golden` records (those feeding its output nodes, so the CLI's goldens can be
        shared); else every Image and Mask the run computed.
        """
        from sdflow.golden.capture import image_refs, workflow_hash
        from sdflow.nodes.types import Image, Mask

        if outputs is not None:
            refs = list(outputs)
        elif workflow is not None:
            refs = image_refs(workflow)
        else:
            refs = [
                f"{node}.{output}"
                for node, values in result.outputs.items()
                for output, value in values.items()
                if isinstance(value, Image | Mask)
            ]
        extra: dict[str, Any] = {"inputs": {"resolved": result.report.inputs}}
        if workflow is not None:
            extra["workflow"] = {"file": workflow.file, "sha256": workflow_hash(workflow)}
        self.check_images(name, {ref: result[ref] for ref in refs}, meta=extra, **thresholds)

    def check_images(
        self,
        name: str,
        images: Mapping[str, Any],
        *,
        meta: Mapping[str, Any] | None = None,
        **thresholds: float,
    ) -> None:
        """Check named images against golden ``name``; ``meta`` adds to what a recording stores."""
        from sdflow.golden import store
        from sdflow.golden.capture import GoldenError, environment, to_array
        from sdflow.golden.harness import check_images

        path = self.path(name)
        arrays = {output: to_array(image) for output, image in images.items()}
        current = environment(None, None)
        if self.update:
            earlier = self._recorded.get(str(path))
            if earlier is not None and earlier != self._test_id:
                pytest.fail(
                    f"golden '{name}' is recorded by two tests: {earlier} and this one", pytrace=False
                )
            store.save(path, arrays, {**(meta or {}), "test": self._test_id, "environment": current})
            self._recorded[str(path)] = self._test_id
            return
        try:
            golden = store.load(path)
        except store.GoldenMissing:
            pytest.fail(
                f"no golden '{name}' in {path}/: record it with pytest --update-goldens", pytrace=False
            )
        except GoldenError as exc:
            pytest.fail(str(exc), pytrace=False)
        limits = Thresholds(**{**vars(self.thresholds), **thresholds})
        result = check_images(name, golden, arrays, limits, current, self.artifacts_dir)
        for line in result.warnings:
            warnings.warn(GoldenEnvironmentWarning(f"golden '{name}': {line}"), stacklevel=2)
        if not result.passed:
            pytest.fail(result.report(), pytrace=False)


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> GoldenChecker:
    """Check images against goldens in the `golden_dir` ini folder; record them with --update-goldens."""
    config = request.config
    root = config.rootpath / config.getini("golden_dir")
    artifacts = config.getini("golden_artifacts_dir")
    return GoldenChecker(
        root=root,
        update=bool(config.getoption("update_goldens")),
        thresholds=Thresholds(
            max_abs=_ini_float(config, "golden_max_abs"),
            psnr=_ini_float(config, "golden_psnr"),
            ssim=_ini_float(config, "golden_ssim"),
        ),
        artifacts_dir=config.rootpath / artifacts if artifacts else None,
        recorded=config.stash[_RECORDED],
        test_id=request.node.nodeid,
    )


def _ini_float(config: pytest.Config, name: str) -> float:
    raw = config.getini(name)
    try:
        return float(raw)
    except ValueError:
        raise pytest.UsageError(f"ini option {name} must be a number, got '{raw}'") from None
