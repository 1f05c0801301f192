"""The Python examples: each one that mirrors a YAML workflow builds it node for node and draws the
same pixels as the CLI; every example script runs and writes into its output folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image as PILImage

import sdflow
from sdflow.cli import main as cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULES = {path.stem: _module(path) for path in SCRIPTS}
MIRRORS = sorted(name for name, module in MODULES.items() if hasattr(module, "YAML"))


@pytest.fixture(scope="module")
def shared_runner(tmp_path_factory: pytest.TempPathFactory) -> sdflow.Runner:
    return sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("unused")))


def _cli_pngs(workflow: Path, output_dir: Path) -> list[Path]:
    # fp32 as the shared runner: 'auto' may pick bf16 on a CPU with native bf16
    assert cli(["run", str(workflow), "--output-dir", str(output_dir), "--quiet", "--dtype", "fp32"]) == 0
    return sorted(output_dir.rglob("*.png"))


def _pixels(path: Path | str) -> np.ndarray:
    with PILImage.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_the_python_examples_include_the_required_ones():
    assert {"txt2img", "img2img", "seed_sweep", "from_scratch"} <= set(MODULES)
    assert "txt2img" in MIRRORS


@pytest.mark.parametrize("name", MIRRORS)
def test_a_mirroring_example_builds_its_yaml_workflow_node_for_node(name: str):
    module = MODULES[name]

    built = module.build()

    assert built.structure() == sdflow.load(EXAMPLES / module.YAML).structure()


@pytest.mark.parametrize("name", MIRRORS)
def test_a_mirroring_example_draws_the_same_pixels_as_the_cli(name: str, tmp_path: Path, shared_runner):
    module = MODULES[name]
    from_cli = _cli_pngs(EXAMPLES / module.YAML, tmp_path / "cli")

    result = shared_runner.run(module.build(), output_dir=str(tmp_path / "python"))

    assert len(result.files) == len(from_cli) >= 1
    for ours, theirs in zip(sorted(result.files), from_cli, strict=True):
        assert np.array_equal(_pixels(ours), _pixels(theirs))


def test_a_loaded_unchanged_workflow_writes_the_same_png_bytes_as_the_cli(tmp_path: Path, shared_runner):
    from_cli = _cli_pngs(EXAMPLES / "txt2img.yaml", tmp_path / "cli")

    result = shared_runner.run(sdflow.load(EXAMPLES / "txt2img.yaml"), output_dir=str(tmp_path / "python"))

    assert [Path(p).read_bytes() for p in result.files] == [p.read_bytes() for p in from_cli]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_an_example_script_runs_and_writes_pngs_into_its_output_dir(name: str, tmp_path: Path):
    MODULES[name].main(["--output-dir", str(tmp_path)])

    written = sorted(tmp_path.rglob("*.png"))
    assert written, f"examples/{name}.py wrote no PNG"
    assert all(_pixels(path).size > 0 for path in written)


def test_the_first_example_of_the_python_api_doc_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    doc = (EXAMPLES.parent / "docs" / "python-api.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)

    exec(compile(code, "docs/python-api.md", "exec"), {})

    assert len(list((tmp_path / "outputs").glob("first_*.png"))) == 1
    assert sdflow.load(tmp_path / "outputs" / "first.yaml").nodes["decoded"].type == "VAEDecode"
