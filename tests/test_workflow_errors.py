"""Every mistake a user can make in a workflow or on the command line gets one clear message naming
the file, line, column, node and field, and exit code 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from workflows import txt2img

from sdflow.cli import main
from sdflow.errors import Location, UserError, WorkflowError, WorkflowErrors
from sdflow.graphs import load, loads, validate
from sdflow.runner.core.plan import check

# Line numbers in the cases below refer to this text.
BASE = txt2img(
    {"prompt": '"a red circle"', "seed": 42, "steps": 4},
    schedule={"sampler": "euler"},
    denoised={"cfg": 5.0},
    save=True,
)


def edited(old: str, new: str) -> str:
    """BASE with one line changed (``old`` must occur exactly once)."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


@dataclass(frozen=True)
class Case:
    """A broken workflow and where its one error must point."""

    text: str
    line: int
    col: int | None
    node: str | None
    field: str | None
    says: tuple[str, ...]


CASES = {
    "invalid_yaml_syntax": Case(
        edited("  seed: 42", "  seed: [42"), 5, 8, None, None, ("invalid YAML", "expected ',' or ']'")
    ),
    "unknown_node_type_with_suggestion": Case(
        edited("type: VAEDecode", "type: VAEDecod"),
        40,
        11,
        "decoded",
        "type",
        ("unknown node type 'VAEDecod'", "did you mean 'VAEDecode'?"),
    ),
    "unknown_field_with_suggestion": Case(
        edited("cfg: 5.0", "cfgg: 5.0"),
        38,
        11,
        "denoised",
        "cfgg",
        ("DenoiseLoop has no field 'cfgg'", "did you mean 'cfg'?"),
    ),
    "missing_required_field": Case(
        edited("    vae: !link ckpt.vae\n", ""),
        39,
        3,
        "decoded",
        "vae",
        ("VAEDecode needs field 'vae'", "a link to a Vae"),
    ),
    "wrong_value_type": Case(
        edited("height: 64", "height: tall"),
        21,
        13,
        "empty",
        "height",
        ("valid integer", "expected int", "got 'tall'"),
    ),
    "steps_out_of_range": Case(
        edited("steps: !input steps", "steps: 0"),
        26,
        12,
        "schedule",
        "steps",
        ("greater than or equal to 1", "got 0"),
    ),
    "width_not_a_multiple_of_8": Case(
        edited("width: 64", "width: 100"),
        20,
        12,
        "empty",
        "width",
        ("multiple of 8", "got 100"),
    ),
    "unknown_sampler_with_suggestion": Case(
        edited("sampler: euler", "sampler: eulr"),
        25,
        14,
        "schedule",
        "sampler",
        ("'eulr' is not one of ddim,", "did you mean 'euler'?"),
    ),
    "link_to_a_missing_node": Case(
        edited("latent: !link noised", "latent: !link noisd"),
        37,
        13,
        "denoised",
        "latent",
        ("link to missing node 'noisd'", "did you mean 'noised'?"),
    ),
    "link_to_a_missing_output": Case(
        edited("vae: !link ckpt.vae", "vae: !link ckpt.vea"),
        41,
        10,
        "decoded",
        "vae",
        ("LoadCheckpoint 'ckpt' has no output 'vea'", "did you mean 'vae'?"),
    ),
    "link_whose_type_does_not_fit": Case(
        edited("vae: !link ckpt.vae", "vae: !link ckpt.model"),
        41,
        10,
        "decoded",
        "vae",
        ("ckpt.model is Model", "VAEDecode.vae expects Vae"),
    ),
    "link_to_a_node_with_several_outputs_without_naming_one": Case(
        edited("vae: !link ckpt.vae", "vae: !link ckpt"),
        41,
        10,
        "decoded",
        "vae",
        ("has outputs model, clip, vae, clip_vision: name one", "!link ckpt.model"),
    ),
    "constant_in_a_link_field": Case(
        edited("vae: !link ckpt.vae", "vae: ckpt.vae"),
        41,
        10,
        "decoded",
        "vae",
        ("takes a link to a Vae output", "not the constant 'ckpt.vae'"),
    ),
    "a_cycle": Case(
        edited("latent: !link empty", "latent: !link denoised"),
        37,
        13,
        "denoised",
        "latent",
        ("the graph has a cycle: denoised -> noised -> denoised",),
    ),
    "unknown_workflow_input_with_suggestion": Case(
        edited("seed: !input seed", "seed: !input sed"),
        31,
        11,
        "noised",
        "seed",
        ("unknown workflow input 'sed'", "did you mean 'seed'?"),
    ),
    "input_default_out_of_range": Case(
        edited("  steps: 4", "  steps: 0"),
        26,
        12,
        "schedule",
        "steps",
        ("default of input 'steps' does not fit", "greater than or equal to 1"),
    ),
    "node_type_not_a_name": Case(
        edited("type: VAEDecode", "type: [VAEDecode]"),
        40,
        11,
        "decoded",
        "type",
        ("'type' must be a node type name",),
    ),
}


def the_error(text: str, file: str = "broken.yaml") -> UserError:
    """The single error that loading and validating ``text`` raises."""
    with pytest.raises(UserError) as caught:
        validate(loads(text, file))
    errors = caught.value.errors if isinstance(caught.value, WorkflowErrors) else [caught.value]
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def assert_located(location: Location, file: str, case: Case) -> None:
    assert (location.file, location.line, location.col) == (file, case.line, case.col)
    assert (location.node, location.field) == (case.node, case.field)


def test_the_base_workflow_is_valid() -> None:
    validate(loads(BASE, "base.yaml"))
    check(loads(BASE, "base.yaml"))


@pytest.mark.parametrize("name", list(CASES))
def test_load_error_names_file_line_column_node_and_field(name: str) -> None:
    case = CASES[name]
    error = the_error(case.text)
    assert_located(error.location, "broken.yaml", case)
    for words in case.says:
        assert words in error.message


@pytest.mark.parametrize("name", list(CASES))
def test_cli_validate_prints_the_located_message_and_exits_2(
    name: str, write_workflow, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    path = write_workflow(case.text)
    assert main(["validate", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.startswith(f"error: {path}:{case.line}:{case.col}")
    if case.node is not None:
        assert f"node '{case.node}', field '{case.field}'" in stderr
    assert all(words in stderr for words in case.says)
    assert "Traceback" not in stderr


def test_cli_run_refuses_a_broken_workflow_before_running_anything(
    write_workflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_workflow(CASES["link_whose_type_does_not_fit"].text)
    output_dir = tmp_path / "out"
    assert main(["run", str(path), "--output-dir", str(output_dir), "--quiet"]) == 2
    assert "ckpt.model is Model" in capsys.readouterr().err
    assert not output_dir.exists()


def test_all_errors_are_reported_in_one_pass_in_line_order() -> None:
    text = BASE.replace("width: 64", "width: 100").replace("type: VAEDecode", "type: VAEDecod")
    with pytest.raises(WorkflowErrors) as caught:
        validate(loads(text, "broken.yaml"))
    located = [(e.location.line, e.location.node) for e in caught.value.errors]
    assert located == [(20, "empty"), (40, "decoded")]


def test_real_sdflow_validate_process_exits_2_without_traceback(write_workflow) -> None:
    path = write_workflow(CASES["unknown_node_type_with_suggestion"].text)
    script = Path(sys.executable).with_name("sdflow")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "sdflow.cli"]
    done = subprocess.run([*command, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert f"{path}:40:11, node 'decoded', field 'type'" in done.stderr
    assert "did you mean 'VAEDecode'?" in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


# -- mistakes on the command line and outside the file ---------------------------------------------


@pytest.fixture
def base_file(write_workflow) -> Path:
    return write_workflow(BASE, "base.yaml")


def cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """stderr of an in-process CLI call that must fail with exit code 2 and no traceback."""
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    return stderr


def test_set_with_a_value_of_the_wrong_type(base_file: Path, tmp_path: Path, capsys) -> None:
    stderr = cli_error(["run", str(base_file), "--set", "seed=abc", "--output-dir", str(tmp_path)], capsys)
    assert stderr == f"error: {base_file}:4:9: --set seed=abc: input 'seed' takes an int, got 'abc'\n"


def test_set_with_a_value_out_of_range(base_file: Path, tmp_path: Path, capsys) -> None:
    stderr = cli_error(["run", str(base_file), "--set", "steps=0", "--output-dir", str(tmp_path)], capsys)
    assert stderr.startswith(f"error: {base_file}:26:12, node 'schedule', field 'steps': ")
    assert "greater than or equal to 1 (got 0 from input 'steps')" in stderr


def test_set_of_an_unknown_input_with_suggestion(base_file: Path, tmp_path: Path, capsys) -> None:
    stderr = cli_error(["run", str(base_file), "--set", "sed=1", "--output-dir", str(tmp_path)], capsys)
    expected = "--set sed=1: the workflow has no input 'sed'; did you mean 'seed'?"
    assert stderr == f"error: {base_file}: {expected}\n"


def test_set_without_a_value(base_file: Path, tmp_path: Path, capsys) -> None:
    stderr = cli_error(["run", str(base_file), "--set", "seed", "--output-dir", str(tmp_path)], capsys)
    assert "--set seed: expected NAME=VALUE" in stderr


def test_a_bad_sweep_value_fails_before_the_first_run(base_file: Path, tmp_path: Path, capsys) -> None:
    output_dir = tmp_path / "out"
    argv = ["run", str(base_file), "--sweep", "steps=2,0", "--output-dir", str(output_dir), "--quiet"]
    stderr = cli_error(argv, capsys)
    assert "field 'steps'" in stderr and "got 0 from input 'steps'" in stderr
    assert not output_dir.exists()


def test_workflow_input_not_declared_is_refused_by_the_api(base_file: Path) -> None:
    with pytest.raises(WorkflowErrors, match="unknown workflow input 'sed'; did you mean 'seed'"):
        check(load(base_file), {"sed": 1})


def test_missing_checkpoint_folder(write_workflow, capsys) -> None:
    path = write_workflow(edited('"builtin:tiny-sd15"', '"/no/such/sd15"'))
    stderr = cli_error(["validate", str(path)], capsys)
    where = f"{path}:9:17, node 'ckpt', field 'checkpoint'"
    assert stderr == f"error: {where}: checkpoint file or folder '/no/such/sd15' does not exist\n"


def test_unknown_builtin_checkpoint_lists_the_builtins(write_workflow, capsys) -> None:
    path = write_workflow(edited('"builtin:tiny-sd15"', '"builtin:tiny-sd16"'))
    stderr = cli_error(["validate", str(path)], capsys)
    assert f"{path}:9:17, node 'ckpt', field 'checkpoint'" in stderr
    assert "no built-in checkpoint 'tiny-sd16'" in stderr and "builtin:tiny-sd15" in stderr


def test_missing_checkpoint_set_from_the_command_line(base_file: Path, tmp_path: Path, capsys) -> None:
    text = BASE.replace('checkpoint: "builtin:tiny-sd15"', "checkpoint: !input checkpoint").replace(
        "  steps: 4\n", '  steps: 4\n  checkpoint: "builtin:tiny-sd15"\n'
    )
    base_file.write_text(text)
    argv = ["run", str(base_file), "--set", "checkpoint=/no/such/sd15", "--output-dir", str(tmp_path)]
    stderr = cli_error(argv, capsys)
    expected = "node 'ckpt', field 'checkpoint': checkpoint file or folder '/no/such/sd15' does not exist"
    assert expected in stderr


def test_missing_workflow_file(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nothere.yaml"
    assert cli_error(["validate", str(missing)], capsys) == f"error: {missing}: workflow file not found\n"
    assert cli_error(["run", str(missing)], capsys) == f"error: {missing}: workflow file not found\n"


def test_missing_workflow_file_from_the_api(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load(tmp_path / "nothere.yaml")
    assert caught.value.location.file == str(tmp_path / "nothere.yaml")


def test_unknown_node_type_in_sdflow_nodes(capsys) -> None:
    stderr = cli_error(["nodes", "VAEDecod"], capsys)
    assert "unknown node type 'VAEDecod'; did you mean 'VAEDecode'?" in stderr


def test_absent_device(base_file: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    stderr = cli_error(["run", str(base_file), "--device", "cuda", "--output-dir", str(tmp_path)], capsys)
    assert "device 'cuda' was asked for, but no CUDA GPU is available" in stderr


def test_validate_with_a_required_input_unset_checks_the_graph_only(write_workflow, capsys) -> None:
    text = BASE.replace("  steps: 4", "  steps: {type: int}")
    path = write_workflow(text)
    assert main(["validate", str(path)]) == 0
    assert "give steps with --set" in capsys.readouterr().out
    assert main(["validate", str(path), "--set", "steps=0"]) == 2
    assert "got 0 from input 'steps'" in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_refused_before_running(base_file: Path, tmp_path: Path, capsys) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")
    stderr = cli_error(["run", str(base_file), "--output-dir", str(in_the_way), "--quiet"], capsys)
    assert stderr == f"error: --output-dir {in_the_way}: '{in_the_way}' is a file, not a folder\n"


def test_report_under_a_file_is_refused_before_running(base_file: Path, tmp_path: Path, capsys) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("x")
    output_dir = tmp_path / "out"
    report = in_the_way / "report.json"
    argv = ["run", str(base_file), "--output-dir", str(output_dir), "--report", str(report), "--quiet"]
    assert "is a file, not a folder" in cli_error(argv, capsys)
    assert not output_dir.exists()
