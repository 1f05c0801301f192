"""Model folders in use: names in workflows, suggestions, and `sdflow models` with each file's family."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def model_folders(single_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A ComfyUI and an A1111 install holding the tiny single files, a pickle, a folder, a LoRA."""
    comfy, a1111 = tmp_path / "ComfyUI", tmp_path / "webui"
    checkpoints = comfy / "models/checkpoints"
    (checkpoints / "sd1").mkdir(parents=True)
    shutil.copy(single_files["sd15"][0], checkpoints / "sd1/dreamshaper_8.safetensors")
    shutil.copy(single_files["sd2-inpaint"][0], checkpoints / "sd2_inpainting.safetensors")
    shutil.copytree(ROOT / "sdflow/builtin/tiny-sd15", checkpoints / "tiny-folder")
    shutil.copytree(ROOT / "sdflow/builtin/tiny-sdxl-refiner", checkpoints / "refiner-folder")
    (checkpoints / "sd2-folder/unet").mkdir(parents=True)
    (checkpoints / "sd2-folder/model_index.json").write_text("{}")
    (checkpoints / "sd2-folder/unet/config.json").write_text('{"cross_attention_dim": 1024}')
    (a1111 / "models/Stable-diffusion").mkdir(parents=True)
    shutil.copy(single_files["sd2-v"][0], a1111 / "models/Stable-diffusion/v768.safetensors")
    (a1111 / "models/Stable-diffusion/old.ckpt").write_bytes(b"not opened")
    (comfy / "models/loras").mkdir(parents=True)
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
    lora = {key: torch.zeros(4, 768)}
    save_file(lora, comfy / "models/loras/detail.safetensors")
    monkeypatch.setenv("SDFLOW_MODELS", f"{comfy}:{a1111}")
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    return comfy, a1111


def test_sdflow_models_lists_each_file_with_its_family(model_folders, capsys):
    assert main(["models"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    listed = {line[0]: " ".join(line[1:]) for line in lines if line and not line[0].endswith(":")}
    assert listed["sd1/dreamshaper_8.safetensors"] == "SD 1.x"
    assert listed["sd2_inpainting.safetensors"] == "SD 2.x inpainting"
    assert listed["v768.safetensors"] == "SD 2.x (v_prediction)"
    # the family loading takes each folder for: tiny widths are still SD 1.x, the refiner is no SDXL base
    assert listed["tiny-folder"] == "diffusers folder, SD 1.x"
    assert listed["refiner-folder"] == "diffusers folder, SDXL refiner"
    assert listed["sd2-folder"] == "diffusers folder, SD 2.x"
    assert listed["old.ckpt"].startswith("pickle (not inspected")
    assert listed["detail.safetensors"] == "LoRA, SD 1.x"


def test_sdflow_models_one_kind(model_folders, capsys):
    assert main(["models", "loras"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loras (") and "detail.safetensors" in out and "dreamshaper" not in out


def test_a_name_in_the_model_folders_loads(model_folders, write_workflow, capsys):
    text = (ROOT / "examples/txt2img.yaml").read_text()
    path = write_workflow(text)
    argv = ["validate", str(path), "--set", "checkpoint=dreamshaper_8.safetensors"]
    assert main(argv) == 0


def test_an_unknown_name_suggests_the_closest(model_folders, write_workflow, capsys):
    path = write_workflow((ROOT / "examples/txt2img.yaml").read_text())
    assert main(["validate", str(path), "--set", "checkpoint=dreamshaper_7.safetensors"]) == 2
    stderr = capsys.readouterr().err
    assert "node 'ckpt', field 'checkpoint'" in stderr
    assert "did you mean 'sd1/dreamshaper_8.safetensors'" in stderr


def test_without_folders_sdflow_models_says_how_to_configure(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["models"]) == 0
    assert "set SDFLOW_MODELS" in capsys.readouterr().out


def test_a_relative_checkpoint_path_is_taken_from_the_workflow_folder(single_files, tmp_path, monkeypatch):
    workflows = tmp_path / "project"
    (workflows / "models").mkdir(parents=True)
    shutil.copy(single_files["sd15"][0], workflows / "models/mine.safetensors")
    (workflows / "flow.yaml").write_text((ROOT / "examples/txt2img.yaml").read_text())
    monkeypatch.chdir(tmp_path)  # not the workflow's folder
    argv = ["validate", str(workflows / "flow.yaml"), "--set", "checkpoint=models/mine.safetensors"]
    assert main(argv) == 0


def test_an_unreadable_config_file_is_a_located_checkpoint_error(
    write_workflow, tmp_path, monkeypatch, capsys
):
    """Checkpoints resolve as LoRAs do (one resolver): a broken config file is the field's error."""
    (tmp_path / "config.yaml").write_text("model_folders: [unclosed\n")
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "config.yaml"))
    path = write_workflow((ROOT / "examples/txt2img.yaml").read_text())
    assert main(["validate", str(path), "--set", "checkpoint=dreamshaper_8"]) == 2
    stderr = capsys.readouterr().err
    assert "node 'ckpt', field 'checkpoint': cannot read the sdflow config file" in stderr


def test_sdflow_models_lists_the_built_ins_of_a_kind_with_their_family(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SDFLOW_MODELS", raising=False)
    monkeypatch.setenv("SDFLOW_CONFIG", str(tmp_path / "absent.yaml"))
    assert main(["models", "controlnet"]) == 0
    out = capsys.readouterr().out
    listed = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("  "))
    assert "controlnet (built into sdflow):" in out and "checkpoints" not in out
    assert listed["builtin:tiny-sd15-control"] == "SD 1.x ControlNet (diffusers folder)"
