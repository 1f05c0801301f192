"""LoadVAE: single files in the LDM and diffusers layouts and diffusers folders decode as diffusers
does with the same weights; a ConsistencyDecoderVAE decodes through VAEDecode with a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ConsistencyDecoderVAE
from safetensors.torch import load_file, save_file
from workflows import DROP, Fields, txt2img

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.models import vae as vae_files
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vaes(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, Path]:
    """Tiny random VAEs in every form, written by tools/make_tiny_vaes.py."""
    return tool("make_tiny_vaes.py").write_all(tmp_path_factory.mktemp("vaes"))


def workflow(file: str, seed: int = 0, extra: Fields | None = None) -> str:
    """A tiny-sd15 txt2img latent (2 steps), decoded by the checkpoint's VAE and by LoadVAE's."""
    return txt2img(
        flow=True,
        vae={"type": "LoadVAE", "file": f'"{file}"', **(extra or {})},
        positive={"text": '"a red circle"'},
        negative=DROP,
        schedule={"sampler": "euler", "steps": 2},
        noised={"seed": 1},
        denoised={"negative": "!link positive", "cfg": 1.0},
        decoded={"vae": "!link vae", "seed": seed},
        own={"type": "VAEDecode", "vae": "!link ckpt.vae", "latent": "!link denoised"},
    )


def decode(runner: Runner, file: str, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    """(LoadVAE's picture, the latent it decoded)."""
    result = runner.run(loads(workflow(file, seed), "w.yaml"), outputs=["decoded", "own"])
    return result["decoded.image"].pixels.numpy(), result["denoised.latent"].samples


def diffusers_decode(vae: torch.nn.Module, latent: torch.Tensor, **kwargs) -> np.ndarray:
    with torch.no_grad():
        out = vae.decode(latent / vae.config.scaling_factor, return_dict=False, **kwargs)[0]
    return (out / 2 + 0.5).clamp(0, 1).numpy()


@pytest.mark.parametrize("form", ["ldm", "diffusers_file", "folder"])
def test_every_form_decodes_as_diffusers_with_the_same_weights(
    runner: Runner, vaes: dict[str, Path], form: str
) -> None:
    ours, latent = decode(runner, str(vaes[form]))
    theirs = diffusers_decode(AutoencoderKL.from_pretrained(str(vaes["folder"])), latent)
    assert np.array_equal(ours, theirs)
    own = runner.run(loads(workflow(str(vaes[form])), "w.yaml"), outputs=["own"])["own.image"].pixels
    assert np.abs(own.numpy() - ours).max() > 0.05  # really another VAE than the checkpoint's


def test_a_whole_checkpoint_file_gives_its_vae(tmp_path: Path, runner: Runner, vaes: dict[str, Path]) -> None:
    ldm = load_file(str(vaes["ldm"]))
    whole = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    whole["model.diffusion_model.out.2.weight"] = torch.zeros(4, 4, 3, 3)
    save_file(whole, str(tmp_path / "model.safetensors"))
    assert np.array_equal(
        decode(runner, str(tmp_path / "model.safetensors"))[0], decode(runner, str(vaes["ldm"]))[0]
    )


def test_a_single_file_gets_its_widths_from_the_shapes_and_the_rest_from_the_sd_config(
    vaes: dict[str, Path],
) -> None:
    shapes = {k: tuple(v.shape) for k, v in load_file(str(vaes["ldm"])).items()}
    config = vae_files.config_from_shapes(shapes, ldm=True)
    assert config["block_out_channels"] == [32, 32, 32, 32]
    assert config["layers_per_block"] == 1
    assert config["scaling_factor"] == 0.18215 and config["norm_num_groups"] == 32


def test_fp16_keeps_an_upcasting_vae_in_fp32(vaes: dict[str, Path]) -> None:
    loaded = vae_files.load(vaes["ldm"], torch.device("cpu"), torch.float16)
    assert next(loaded.parameters()).dtype == torch.float32
    folder = vae_files.load(vaes["consistency"], torch.device("cpu"), torch.bfloat16)
    assert next(folder.parameters()).dtype == torch.bfloat16  # force_upcast is false there


def test_consistency_decoder_decodes_through_vaedecode_with_its_seed(
    runner: Runner, vaes: dict[str, Path]
) -> None:
    ours, latent = decode(runner, str(vaes["consistency"]), seed=5)
    reference = ConsistencyDecoderVAE.from_pretrained(str(vaes["consistency"]))
    theirs = diffusers_decode(reference, latent, generator=torch.Generator().manual_seed(5))
    assert ours.shape == (1, 3, 64, 64)
    assert np.array_equal(ours, theirs)
    other_seed, _ = decode(runner, str(vaes["consistency"]), seed=6)
    assert np.abs(other_seed - ours).max() > 1e-3


def test_vae_found_by_name_and_keyed_by_content(runner: Runner, vaes: dict[str, Path], model_folders) -> None:
    installed = model_folders("webui/models/VAE/ft-mse.safetensors", vaes["ldm"])
    by_name, _ = decode(runner, "ft-mse")
    assert np.array_equal(by_name, decode(runner, str(vaes["ldm"]))[0])
    before = runner.keys(loads(workflow("ft-mse"), "w.yaml"))["vae"]
    installed.write_bytes(vaes["diffusers_file"].read_bytes())
    assert runner.keys(loads(workflow("ft-mse"), "w.yaml"))["vae"] != before


def vae_error(runner: Runner, file: str) -> UserError:
    with pytest.raises(UserError) as caught:
        runner.run(loads(workflow(file), "w.yaml"), outputs=["vae"])
    assert (caught.value.location.node, caught.value.location.field) == ("vae", "file")
    return caught.value


def test_a_missing_vae_is_a_located_error(runner: Runner) -> None:
    assert "no VAE file or folder 'ft-mse-nowhere'" in vae_error(runner, "ft-mse-nowhere").message


def test_a_file_that_is_not_a_vae_is_refused(tmp_path: Path, runner: Runner) -> None:
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    assert "not a VAE" in vae_error(runner, str(tmp_path / "lora.safetensors")).message


def test_an_incomplete_vae_names_what_is_missing(
    tmp_path: Path, runner: Runner, vaes: dict[str, Path]
) -> None:
    tensors = load_file(str(vaes["ldm"]))
    del tensors["decoder.conv_out.weight"]
    save_file(tensors, str(tmp_path / "half.safetensors"))
    assert "decoder.conv_out.weight" in vae_error(runner, str(tmp_path / "half.safetensors")).message


def test_a_folder_without_a_vae_config_is_refused(tmp_path: Path, runner: Runner) -> None:
    (tmp_path / "empty").mkdir()
    assert "no config.json" in vae_error(runner, str(tmp_path / "empty")).message


def test_a_pickled_vae_is_refused_unless_allowed(
    tmp_path: Path, runner: Runner, vaes: dict[str, Path]
) -> None:
    torch.save(load_file(str(vaes["ldm"])), tmp_path / "vae.pt")
    assert "allow_pickle: true" in vae_error(runner, str(tmp_path / "vae.pt")).message
    allowed = runner.run(
        loads(workflow(str(tmp_path / "vae.pt"), extra={"allow_pickle": True}), "w.yaml"), outputs=["decoded"]
    )
    assert np.array_equal(allowed["decoded.image"].pixels.numpy(), decode(runner, str(vaes["ldm"]))[0])


def test_consistency_decoder_vae_encodes_through_vaeencode(runner: Runner, vaes: dict[str, Path]) -> None:
    text = workflow(str(vaes["consistency"])) + (
        "  encoded: {type: VAEEncode, vae: !link vae, image: !link own, posterior: mode}\n"
    )
    result = runner.run(loads(text, "w.yaml"), outputs=["encoded"])
    reference = ConsistencyDecoderVAE.from_pretrained(str(vaes["consistency"]))
    with torch.no_grad():
        pixels = result["own.image"].pixels * 2 - 1
        expected = reference.encode(pixels).latent_dist.mode() * reference.config.scaling_factor
    assert (result["encoded.latent"].samples - expected).abs().max() <= 1e-5  # layouts round apart


def test_a_pipeline_folder_gives_its_vae_and_is_keyed_by_that_alone(runner: Runner) -> None:
    from sdflow.nodes.library.load_vae import LoadVAE

    pipeline = ROOT / "sdflow" / "builtin" / "tiny-sd15"
    result = runner.run(loads(workflow(str(pipeline)), "w.yaml"), outputs=["decoded", "own"])
    assert torch.equal(result["decoded.image"].pixels, result["own.image"].pixels)
    assert LoadVAE.read_from(pipeline) == pipeline / "vae"  # the fingerprint skips the UNet's files
