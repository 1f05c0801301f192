"""Model families are checked along the links before anything runs: conditioning of one family reaching
a model of another is one located error from `sdflow validate` (and before `sdflow run`), decided from
configs and single-file headers without loading a model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from workflows import DROP, txt2img

from sdflow.cli import main
from sdflow.errors import WorkflowErrors
from sdflow.graphs import loads
from sdflow.models import checkpoints, detect, singlefile
from sdflow.models.families import SD15, SDXL, SDXL_REFINER
from sdflow.runner import Runner
from sdflow.runner.core.plan import check

TXT2IMG = txt2img(
    {"model_from": '"builtin:tiny-sdxl"', "clip_from": '"builtin:tiny-sdxl"'},
    flow=True,
    ckpt=DROP,
    base={"type": "LoadCheckpoint", "checkpoint": "!input model_from"},
    other={"type": "LoadCheckpoint", "checkpoint": "!input clip_from"},
    positive={"clip": "!link other.clip", "text": '"a red circle"'},
    negative={"clip": "!link other.clip"},
    schedule={"model": "!link base.model", "sampler": DROP, "steps": 2},
    noised={"seed": DROP},
    denoised={"model": "!link base.model", "cfg": DROP},
    decoded={"vae": "!link base.vae"},
)
# the line of the DenoiseLoop's `positive` field
DENOISE_LINE = next(n for n, line in enumerate(TXT2IMG.splitlines(), 1) if "positive: !link positive" in line)


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to load a checkpoint fails the test: the check must read configs and headers only."""

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was loaded during the family check")

    monkeypatch.setattr(checkpoints, "load", refuse)
    monkeypatch.setattr(checkpoints, "_load_pretrained", refuse)
    monkeypatch.setattr(singlefile, "load", refuse)


def validate(path: Path, capsys, *settings: str) -> tuple[int, str]:
    arguments = ["validate", str(path)]
    for setting in settings:
        arguments += ["--set", setting]
    code = main(arguments)
    return code, capsys.readouterr().err


def test_sd15_conditioning_for_an_sdxl_model_is_refused_at_the_positive_field(
    write_workflow, capsys, nothing_loads
) -> None:
    path = write_workflow(TXT2IMG)
    code, stderr = validate(path, capsys, "clip_from=builtin:tiny-sd15")
    assert code == 2
    assert "Traceback" not in stderr
    assert stderr.count("error:") == 1
    assert f"{path}:{DENOISE_LINE}:" in stderr
    assert "node 'denoised', field 'positive'" in stderr
    assert "'positive' is SD 1.x (from node 'other') but 'model' is SDXL (from node 'base')" in stderr


def test_the_reverse_mix_is_refused_before_a_run_loads_anything(tmp_path, nothing_loads) -> None:
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    workflow = loads(TXT2IMG, "mixed.yaml")
    inputs = {"model_from": "builtin:tiny-sd15", "clip_from": "builtin:tiny-sdxl"}
    with pytest.raises(WorkflowErrors) as caught:
        runner.run(workflow, inputs=inputs)
    [error] = caught.value.errors
    where = error.location
    assert (where.node, where.field, where.line) == ("denoised", "positive", DENOISE_LINE)
    assert "'positive' is SDXL (from node 'other') but 'model' is SD 1.x (from node 'base')" in str(error)


def test_workflows_of_one_family_still_validate(write_workflow, capsys, nothing_loads) -> None:
    path = write_workflow(TXT2IMG)
    for name in ("tiny-sdxl", "tiny-sd15", "tiny-sdxl-refiner"):
        spec = "builtin:" + name
        assert validate(path, capsys, f"model_from={spec}", f"clip_from={spec}") == (0, "")


def test_single_files_are_told_apart_by_their_headers(single_files, write_workflow, capsys, nothing_loads):
    path = write_workflow(TXT2IMG)
    sd15, sdxl = str(single_files["sd15"][0]), str(single_files["sdxl"][0])
    code, stderr = validate(path, capsys, f"model_from={sdxl}", f"clip_from={sd15}")
    assert code == 2
    assert f"{path}:{DENOISE_LINE}:" in stderr and "node 'denoised', field 'positive'" in stderr
    assert "'positive' is SD 1.x (from node 'other') but 'model' is SDXL (from node 'base')" in stderr
    assert validate(path, capsys, f"model_from={sdxl}", f"clip_from={sdxl}") == (0, "")
    # a single file and the diffusers folder of the same family mix fine
    assert validate(path, capsys, f"model_from={sd15}", "clip_from=builtin:tiny-sd15") == (0, "")


def test_refiner_and_base_are_different_families(write_workflow, capsys, nothing_loads) -> None:
    path = write_workflow(TXT2IMG)
    code, stderr = validate(path, capsys, "model_from=builtin:tiny-sdxl-refiner")
    assert code == 2
    assert "'positive' is SDXL (from node 'other') but 'model' is SDXL refiner (from node 'base')" in stderr


def test_an_input_driven_checkpoint_is_checked_with_the_value_given(nothing_loads) -> None:
    workflow = loads(TXT2IMG.replace("!input clip_from", '"builtin:tiny-sd15"'), "inputs.yaml")
    assert check(workflow, {"model_from": "builtin:tiny-sd15"})["model_from"] == "builtin:tiny-sd15"
    with pytest.raises(WorkflowErrors, match="'model' is SDXL"):
        check(workflow)  # the default, tiny-sdxl
    with pytest.raises(WorkflowErrors, match="'model' is SDXL refiner"):
        check(workflow, {"model_from": "builtin:tiny-sdxl-refiner"})


def grown(nodes: str, *replacements: tuple[str, str]) -> str:
    """TXT2IMG with more nodes and some links rewired."""
    text = TXT2IMG
    for old, new in replacements:
        text = text.replace(old, new)
    return text + nodes


@pytest.mark.parametrize("node", ["ConditioningConcat", "ConditioningAverage"])
def test_combining_conditionings_of_two_families_is_one_error(node: str, nothing_loads) -> None:
    text = grown(
        f"""  third: {{type: LoadCheckpoint, checkpoint: !input third}}
  extra: {{type: CLIPEncode, clip: !link third.clip, text: "a dog"}}
  both: {{type: {node}, first: !link positive, second: !link extra}}
""",
        ("positive: !link positive,", "positive: !link both,"),
        ("inputs:\n", 'inputs:\n  third: "builtin:tiny-sd15"\n'),
    )
    with pytest.raises(WorkflowErrors) as caught:
        check(loads(text, "combined.yaml"))
    [error] = caught.value.errors  # the DenoiseLoop after it is not blamed as well
    assert (error.location.node, error.location.field) == ("both", "second")
    assert "'second' is SD 1.x (from node 'third') but 'first' is SDXL (from node 'other')" in str(error)
    assert "first and second must come from checkpoints of one model family" in str(error)
    check(loads(text, "combined.yaml"), {"third": "builtin:tiny-sdxl"})


def test_families_pass_through_a_lora_unchanged(tmp_path: Path, nothing_loads) -> None:
    lora = tmp_path / "style.safetensors"
    lora.write_bytes(b"")  # never read before a run
    text = grown(
        f"  styled: {{type: LoadLoRA, model: !link base.model, clip: !link other.clip, file: {lora}}}\n",
        ("!link base.model", "!link styled.model"),
        ("!link other.clip", "!link styled.clip"),
    )
    inputs = {"model_from": "builtin:tiny-sd15", "clip_from": "builtin:tiny-sdxl"}
    with pytest.raises(WorkflowErrors) as caught:
        check(loads(text, "lora.yaml"), inputs)
    [error] = caught.value.errors
    assert (error.location.node, error.location.field) == ("denoised", "positive")
    assert "'positive' is SDXL (from node 'other') but 'model' is SD 1.x (from node 'base')" in str(error)


def test_an_unknown_family_checks_nothing_early_and_the_run_still_refuses(
    write_workflow, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detect, "checkpoint_family", lambda spec: None)
    path = write_workflow(TXT2IMG)
    assert validate(path, capsys, "clip_from=builtin:tiny-sd15") == (0, "")
    arguments = ["run", str(path), "--set", "clip_from=builtin:tiny-sd15", "--output-dir", str(tmp_path)]
    assert main([*arguments, "--quiet"]) == 2
    stderr = capsys.readouterr().err
    assert "node 'denoised', field 'positive'" in stderr
    assert "encoded by a SD 1.x text encoder but the model is SDXL" in stderr


def test_pickles_and_hub_ids_have_no_early_family(tmp_path: Path) -> None:
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not read")
    assert detect.checkpoint_family(str(pickle)) is None
    assert detect.checkpoint_family("someone/some-model") is None
    assert detect.checkpoint_family(str(tmp_path / "missing.safetensors")) is None


def test_detection_is_read_once_per_file_state(single_files, tmp_path: Path, monkeypatch) -> None:
    file = tmp_path / "copy.safetensors"
    file.write_bytes(single_files["sdxl-refiner"][0].read_bytes())
    reads = []
    inspect = detect.inspect
    monkeypatch.setattr(detect, "inspect", lambda path: reads.append(path) or inspect(path))
    assert detect.checkpoint_family(str(file)) is SDXL_REFINER
    assert detect.checkpoint_family(str(file)) is SDXL_REFINER
    assert len(reads) == 1
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert detect.checkpoint_family(str(file)) is SDXL_REFINER
    assert len(reads) == 2


def test_folder_families_come_from_their_configs() -> None:
    assert detect.checkpoint_family("builtin:tiny-sd15") is SD15
    assert detect.checkpoint_family("builtin:tiny-sdxl") is SDXL
    assert detect.checkpoint_family("builtin:shapes-xl-refiner") is SDXL_REFINER
