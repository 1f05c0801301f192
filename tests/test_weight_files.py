"""Bad and risky model files: pickles need an opt-in, corrupt files and broken folders get one
located message (exit 2), odd tokenizer configs do not crash CLIPEncode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from workflows import DROP, Fields, txt2img

import sdflow
from sdflow.cli import main
from sdflow.errors import UserError
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sdflow" / "builtin" / "tiny-sd15"


def workflow(write_workflow, checkpoint: Path | str, extra: Fields | None = None) -> Path:
    """A txt2img workflow on ``checkpoint`` (with ``config: builtin:tiny-sd15`` for single files)."""
    config = {} if Path(checkpoint).is_dir() else {"config": "builtin:tiny-sd15"}
    return write_workflow(
        txt2img(
            flow=True,
            ckpt={"checkpoint": f'"{checkpoint}"', **config, **(extra or {})},
            positive={"text": '"a red circle"'},
            negative=DROP,
            schedule={"sampler": "ddim", "steps": 2},
            noised={"seed": 1},
            denoised={"negative": "!link positive", "cfg": 2.0},
        )
    )


def exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr and stderr.count("\n") == 1
    return stderr


@pytest.fixture
def pickled(single_files, tmp_path: Path) -> Path:
    """The tiny SD 1.x single file saved as a Lightning-style .ckpt pickle ({'state_dict': ...})."""
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": load_file(single_files["sd15"][0]), "global_step": 1}, path)
    return path


def test_pickle_is_refused_naming_the_risk_and_the_opt_in(write_workflow, pickled, capsys):
    path = workflow(write_workflow, pickled)
    stderr = exit_2(["validate", str(path)], capsys)
    assert "node 'ckpt', field 'checkpoint'" in stderr and "model.ckpt" in stderr
    assert "run arbitrary code" in stderr and "allow_pickle: true" in stderr and "--allow-pickle" in stderr


def test_pickle_loads_with_the_field_or_the_global_opt_in(write_workflow, pickled, single_files, capsys):
    assert main(["validate", "--allow-pickle", str(workflow(write_workflow, pickled))]) == 0
    opted_in = workflow(write_workflow, pickled, {"allow_pickle": True})
    assert main(["validate", str(opted_in)]) == 0
    runner = Runner(device="cpu", dtype="fp32", allow_pickle=True)
    from_pickle = runner.run(sdflow.load(workflow(write_workflow, pickled))).tensor("decoded")
    safe = workflow(write_workflow, single_files["sd15"][0])
    assert torch.equal(from_pickle, runner.run(sdflow.load(safe)).tensor("decoded"))


def test_a_pickle_holding_code_is_refused_even_when_allowed(write_workflow, tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": shutil.rmtree}, path)
    runner = Runner(device="cpu", dtype="fp32", allow_pickle=True)
    with pytest.raises(UserError) as error:
        runner.run(sdflow.load(workflow(write_workflow, path)))
    assert "weights-only" in str(error.value) and "evil.ckpt" in str(error.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "is truncated"),
        (lambda data: data[:6], "only 6 bytes long"),
        (lambda data: b"\x10\x00\x00\x00\x00\x00\x00\x00{not json!!}" + data[24:], "header is not JSON"),
        (lambda data: b"\xff" * 8 + data[8:], "truncated or not safetensors"),
    ],
)
def test_corrupt_safetensors_exit_2_before_loading(
    write_workflow, single_files, tmp_path, capsys, damage, message
):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(damage(single_files["sd15"][0].read_bytes()))
    stderr = exit_2(["validate", str(workflow(write_workflow, path))], capsys)
    assert "field 'checkpoint'" in stderr and "broken.safetensors" in stderr and message in stderr


def broken_folder(tmp_path: Path, change) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(TINY, folder)
    change(folder)
    return folder


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            lambda f: (f / "unet/diffusion_pytorch_model.safetensors").unlink(),
            "missing weights file {f}/unet/",
        ),
        (lambda f: (f / "vae/config.json").write_text("{oops"), "{f}/vae/config.json is not valid JSON"),
        (lambda f: (f / "text_encoder/model.safetensors").write_bytes(b"12345678"), "{f}/text_encoder/model"),
        (lambda f: shutil.rmtree(f / "tokenizer"), "missing tokenizer file {f}/tokenizer/"),
        (lambda f: (f / "scheduler/scheduler_config.json").unlink(), "missing file {f}/scheduler/"),
    ],
)
def test_broken_folder_component_gets_one_message_naming_the_file(
    write_workflow, tmp_path, capsys, change, named
):
    folder = broken_folder(tmp_path, change)
    stderr = exit_2(["validate", str(workflow(write_workflow, folder))], capsys)
    assert "field 'checkpoint'" in stderr and named.format(f=folder) in stderr


def test_pickled_folder_weights_follow_the_pickle_rule(write_workflow, tmp_path, capsys):
    def to_bin(folder: Path) -> None:
        weights = folder / "unet/diffusion_pytorch_model.safetensors"
        torch.save(load_file(weights), folder / "unet/diffusion_pytorch_model.bin")
        weights.unlink()

    folder = broken_folder(tmp_path, to_bin)
    stderr = exit_2(["validate", str(workflow(write_workflow, folder))], capsys)
    assert "diffusion_pytorch_model.bin" in stderr and "--allow-pickle" in stderr
    assert main(["validate", "--allow-pickle", str(workflow(write_workflow, folder))]) == 0


def test_tokenizer_config_without_max_length_takes_the_encoders(runner, write_workflow, tmp_path):
    def drop_max_length(folder: Path) -> None:
        path = folder / "tokenizer/tokenizer_config.json"
        config = json.loads(path.read_text())
        del config["model_max_length"]
        path.write_text(json.dumps(config))

    folder = broken_folder(tmp_path, drop_max_length)
    result = runner.run(sdflow.load(workflow(write_workflow, folder)), outputs=["positive"])
    reference = runner.run(sdflow.load(workflow(write_workflow, TINY)), outputs=["positive"])
    assert result.tensor("positive").shape[1] == 77
    assert torch.equal(result.tensor("positive"), reference.tensor("positive"))
