"""The `sdflow` command: run (with --set, --sweep, --report), validate and nodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage

from sdflow.cli import main
from sdflow.nodes import registry

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "txt2img.yaml"
FAST = ["--set", "steps=2", "--quiet"]
EXAMPLE_INPUTS = {
    "prompt": "a red circle on a blue background",
    "negative": "",
    "seed": 42,
    "steps": 2,
    "cfg": 4.0,
    "sampler": "ddim",
    "checkpoint": "builtin:shapes",
}


def run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``sdflow ARGV`` in-process: (exit code, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_report(path: Path) -> dict:
    return json.loads(path.read_text())


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def test_run_writes_a_png_into_the_output_dir_and_prints_its_path(tmp_path: Path, capsys) -> None:
    code, out, err = run_cli("run", str(EXAMPLE), "--output-dir", str(tmp_path), *FAST, capsys=capsys)
    assert code == 0
    [written] = pngs(tmp_path)
    assert out.splitlines() == [str(written)]
    assert PILImage.open(written).size == (64, 64)
    assert err == ""  # --quiet


def test_run_shows_progress_per_node_without_quiet(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(
        "run", str(EXAMPLE), "--output-dir", str(tmp_path), "--set", "steps=2", capsys=capsys
    )
    assert code == 0
    for node in ("ckpt", "positive", "denoised", "decoded", "save"):
        assert any(line.split()[:1] == [node] for line in err.splitlines()), node


def test_report_lists_inputs_nodes_and_files_of_each_run(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--report", str(report), *FAST]
    assert run_cli(*argv, capsys=capsys)[0] == 0
    [run] = read_report(report)["runs"]
    assert run["inputs"] == EXAMPLE_INPUTS
    assert [node["id"] for node in run["nodes"]] == [
        "ckpt",
        "empty",
        "negative",
        "positive",
        "schedule",
        "noised",
        "denoised",
        "decoded",
        "save",
    ]
    for node in run["nodes"]:
        assert set(node) == {"id", "type", "status", "seconds", "batch"}
        assert node["status"] == "ran" and node["batch"] == 1
        assert isinstance(node["seconds"], float) and node["seconds"] >= 0
    assert {n["id"]: n["type"] for n in run["nodes"]}["denoised"] == "DenoiseLoop"
    assert run["files"] == [str(p) for p in pngs(tmp_path / "out")]


def test_report_times_the_first_step(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--report", str(report), *FAST]
    assert run_cli(*argv, capsys=capsys)[0] == 0
    seconds = read_report(report)["seconds"]
    assert set(seconds) == {"to_first_node", "to_first_step", "wall"}
    # since the command started: the first node starts, then the first denoising step ends, then all
    assert 0 < seconds["to_first_node"] < seconds["to_first_step"] < seconds["wall"]


def test_set_overrides_an_input_with_the_declared_type(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path), "--report", str(report), *FAST]
    assert run_cli(*argv, "--set", "seed=5", "--set", "prompt=123", "--set", "cfg=3", capsys=capsys)[0] == 0
    inputs = read_report(report)["runs"][0]["inputs"]
    assert (inputs["seed"], inputs["prompt"], inputs["cfg"]) == (5, "123", 3.0)


def test_sweep_runs_once_per_value_without_reloading_or_reencoding(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--report", str(report), *FAST]
    code, out, _ = run_cli(*argv, "--sweep", "seed=1,2", capsys=capsys)
    assert code == 0
    first, second = read_report(report)["runs"]
    assert (first["inputs"]["seed"], second["inputs"]["seed"]) == (1, 2)
    status = {node["id"]: node["status"] for node in second["nodes"]}
    assert status["ckpt"] == status["positive"] == status["negative"] == "cached"
    assert status["noised"] == status["denoised"] == status["save"] == "ran"
    assert len(pngs(tmp_path / "out")) == 2
    assert len(out.splitlines()) == 2


def test_sweep_of_two_inputs_runs_every_combination(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--report", str(report), *FAST]
    assert run_cli(*argv, "--sweep", "seed=1,2", "--sweep", "cfg=2,3", capsys=capsys)[0] == 0
    runs = read_report(report)["runs"]
    assert [(r["inputs"]["seed"], r["inputs"]["cfg"]) for r in runs] == [
        (1, 2.0),
        (1, 3.0),
        (2, 2.0),
        (2, 3.0),
    ]


def test_png_metadata_holds_the_workflow_and_the_inputs(tmp_path: Path, capsys) -> None:
    assert run_cli("run", str(EXAMPLE), "--output-dir", str(tmp_path), *FAST, capsys=capsys)[0] == 0
    [written] = pngs(tmp_path)
    text = PILImage.open(written).text
    assert text["sdflow:workflow"] == EXAMPLE.read_text()
    assert json.loads(text["sdflow:inputs"]) == EXAMPLE_INPUTS


def test_running_twice_into_one_folder_never_overwrites(tmp_path: Path, capsys) -> None:
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path), *FAST]
    assert run_cli(*argv, capsys=capsys)[0] == 0
    [first] = pngs(tmp_path)
    before = first.read_bytes()
    assert run_cli(*argv, "--set", "seed=43", capsys=capsys)[0] == 0
    files = pngs(tmp_path)
    assert len(files) == 2 and first in files
    assert first.read_bytes() == before
    assert files[0].read_bytes() != files[1].read_bytes()


def test_an_existing_report_is_not_overwritten(tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    report.write_text("keep me")
    argv = ["run", str(EXAMPLE), "--output-dir", str(tmp_path / "out"), "--report", str(report), *FAST]
    assert run_cli(*argv, capsys=capsys)[0] == 0
    assert report.read_text() == "keep me"
    assert "runs" in read_report(tmp_path / "report-1.json")


def test_validate_accepts_the_example(capsys) -> None:
    code, out, err = run_cli("validate", str(EXAMPLE), capsys=capsys)
    assert (code, err) == (0, "")
    assert out == f"{EXAMPLE}: valid (9 nodes)\n"


def test_nodes_lists_every_type_with_its_summary_typed_inputs_and_outputs(capsys) -> None:
    code, out, _ = run_cli("nodes", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    headers = [line for line in lines if line and not line.startswith((" ", "`"))]
    assert [line.split(":")[0] for line in headers] == list(registry.all_types())
    for header, cls in zip(headers, registry.all_types().values(), strict=True):
        assert header.endswith(cls.summary())
    signature = lines[lines.index(headers[0]) + 1]
    assert signature.strip().startswith("(latent: Latent, schedule: Schedule, seed: int | None = 0")
    assert signature.endswith("-> latent: Latent")
    assert "steps: int = 20 [>= 1, <= 500]" in out
    assert lines[lines.index(headers[0]) + 2] == "  in sdflow.nodes.library.add_noise"


def test_nodes_type_shows_typed_inputs_with_defaults_ranges_and_outputs(capsys) -> None:
    code, out, _ = run_cli("nodes", "DenoiseLoop", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("DenoiseLoop (version 2): Denoise a noised latent")
    assert lines[1] == "module: sdflow.nodes.library.denoise_loop"
    assert lines[2] == "inputs:"
    assert lines[3].startswith("  model: Model (link)")
    assert "  latent: Latent (link) — a latent noised by AddNoise: it carries the schedule" in lines
    assert any(line.startswith("  cfg: float = 7.5 [>= 0.0, <= 100.0]") for line in lines)
    assert lines[-2:] == ["outputs:", "  latent: Latent"]


def test_nodes_type_shows_the_choices_of_a_field(capsys) -> None:
    out = run_cli("nodes", "Scheduler", capsys=capsys)[1]
    sampler = next(line for line in out.splitlines() if line.startswith("  sampler:"))
    assert "'ddim' | 'ddpm'" in sampler and "'tcd' = 'euler'" in sampler
    steps = next(line for line in out.splitlines() if line.startswith("  steps:"))
    assert steps.startswith("  steps: int = 20 [>= 1, <= 500] — denoising steps for the full schedule")


def test_nodes_with_an_unknown_type_exits_2(capsys) -> None:
    code, out, err = run_cli("nodes", "DenoiseLoops", capsys=capsys)
    assert (code, out) == (2, "")
    assert err == "error: field 'TYPE': unknown node type 'DenoiseLoops'; did you mean 'DenoiseLoop'?\n"


def test_the_installed_command_runs_the_example(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("sdflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sdflow.cli"]
    argv = [*command, "run", str(EXAMPLE), "--output-dir", str(tmp_path), *FAST]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(pngs(tmp_path)[0])
