"""Tiny autoencoders (TAESD) as a LoadVAE choice: ComfyUI's vae_approx file pair and a diffusers folder
load to the same weights, and VAEDecode / VAEEncode equal diffusers' AutoencoderTiny."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.errors import NodeError
from sdflow.graphs import loads
from sdflow.models import resolver, taesd
from sdflow.models.families import SD2, SD15, SDXL, SDXL_REFINER
from sdflow.runner import Runner

SHIFT = 1  # the original decoder's first module is a Clamp


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random TAESD as a diffusers folder, and as ComfyUI keeps one (vae_approx: two files)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(3)
    model = AutoencoderTiny()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(1.5)  # livelier than the default init, so pictures differ visibly
    root = tmp_path_factory.mktemp("taesd")
    model.save_pretrained(root / "folder")
    approx = root / "vae_approx"
    approx.mkdir()
    state = model.state_dict()
    for part, shift in (("encoder", 0), ("decoder", SHIFT)):
        prefix = f"{part}.layers."
        original = {}
        for key, value in state.items():
            if key.startswith(prefix):
                index, rest = key[len(prefix) :].split(".", 1)
                original[f"{int(index) + shift}.{rest}"] = value.contiguous()
        save_file(original, approx / f"taesd_{part}.safetensors")
    lone = root / "lone"
    lone.mkdir()
    (lone / "taesd_decoder.safetensors").write_bytes((approx / "taesd_decoder.safetensors").read_bytes())
    return {
        "folder": root / "folder",
        "decoder": approx / "taesd_decoder.safetensors",
        "lone": lone / "taesd_decoder.safetensors",
    }


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def vae_of(runner: Runner, file: Path):
    text = f'version: 1\nnodes:\n  vae: {{type: LoadVAE, file: "{file}"}}\n'
    return runner.run(loads(text, "vae.yaml"), outputs=["vae"])["vae.vae"]


def test_the_comfyui_file_pair_loads_to_the_weights_of_the_folder(runner, tiny):
    from_files, from_folder = vae_of(runner, tiny["decoder"]).vae, vae_of(runner, tiny["folder"]).vae
    assert type(from_files).__name__ == "AutoencoderTiny"
    theirs = from_folder.state_dict()
    assert from_files.state_dict().keys() == theirs.keys()
    assert all(torch.equal(value, theirs[key]) for key, value in from_files.state_dict().items())


DECODE = """
version: 1
nodes:
  vae: {{type: LoadVAE, file: "{file}"}}
  image: {{type: LoadImage, path: "{picture}"}}
  encoded: {{type: VAEEncode, vae: !link vae, image: !link image.image}}
  decoded: {{type: VAEDecode, vae: !link vae, latent: !link encoded}}
"""


@pytest.fixture(scope="module")
def picture(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("pictures") / "p.png"
    pixels = (torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(path)
    return path


def test_encode_and_decode_equal_diffusers_autoencoder_tiny(runner, tiny, picture):
    import numpy as np
    from diffusers import AutoencoderTiny
    from PIL import Image

    result = runner.run(
        loads(DECODE.format(file=tiny["decoder"], picture=picture), "t.yaml"), outputs=["decoded"]
    )
    reference = AutoencoderTiny.from_pretrained(tiny["folder"]).eval()
    pixels = torch.from_numpy(np.array(Image.open(picture).convert("RGB"))).float().div(255)
    pixels = pixels.permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        latents = reference.encode(pixels * 2 - 1).latents * reference.config.scaling_factor
        decoded = reference.decode(latents / reference.config.scaling_factor).sample
    expected = (decoded / 2 + 0.5).clamp(0, 1)
    assert torch.allclose(result["encoded.latent"].samples, latents, atol=1e-6)
    assert (result["decoded.image"].pixels - expected).abs().max() <= 1 / 255


def test_sampling_a_tiny_posterior_returns_its_latents(runner, tiny, picture):
    text = DECODE.format(file=tiny["folder"], picture=picture)
    sampled = runner.run(
        loads(
            text.replace("image: !link image.image}", "image: !link image.image, posterior: sample}"),
            "s.yaml",
        ),
        outputs=["encoded"],
    )
    mode = runner.run(loads(text, "m.yaml"), outputs=["encoded"])
    assert torch.equal(sampled["encoded.latent"].samples, mode["encoded.latent"].samples)


def test_a_decoder_alone_decodes_and_refuses_to_encode(runner, tiny, picture):
    with pytest.raises(NodeError) as caught:
        runner.run(loads(DECODE.format(file=tiny["lone"], picture=picture), "lone.yaml"), outputs=["decoded"])
    assert caught.value.location.node == "encoded" and "no encoder" in str(caught.value)
    text = f"""
version: 1
nodes:
  vae: {{type: LoadVAE, file: "{tiny["lone"]}"}}
  empty: {{type: EmptyLatent, width: 64, height: 64}}
  decoded: {{type: VAEDecode, vae: !link vae, latent: !link empty}}
"""
    image = runner.run(loads(text, "d.yaml"), outputs=["decoded"])["decoded.image"]
    assert image.size == (64, 64)


APPROX = "ComfyUI/models/vae_approx/"


def test_previews_find_the_family_decoder_in_vae_approx(tiny, model_folders):
    decoder = model_folders(APPROX + "taesd_decoder.safetensors", tiny["decoder"])
    assert taesd.find(SD15) == decoder and taesd.find(SD2) == decoder
    assert taesd.find(SDXL) is None  # SDXL's latents need TAESDXL
    xl = model_folders(APPROX + "taesdxl_decoder.safetensors", tiny["decoder"])
    assert taesd.find(SDXL) == xl and taesd.find(SDXL_REFINER) == xl


def test_previews_find_a_pickle_decoder_only_when_pickles_are_allowed(tiny, model_folders):
    pickled = model_folders(APPROX + "taesd_decoder.pth", tiny["decoder"])
    assert taesd.find(SD15) is None
    assert taesd.find(SD15, allow_pickle=True) == pickled


def test_previews_find_an_autoencoder_tiny_folder_named_for_the_family(tiny, model_folders):
    for file in tiny["folder"].iterdir():
        model_folders(APPROX + "taesdxl/" + file.name, file)
    assert taesd.find(SDXL).name == "taesdxl" and taesd.find(SD15) is None


def test_a_builtin_model_previews_with_the_tiny_vae_distilled_from_its_own_vae(tiny, model_folders):
    decoder = model_folders(APPROX + "taesd_decoder.safetensors", tiny["decoder"])
    distilled = resolver.builtin("vae", "builtin:shapes-taesd")
    for name in ("shapes", "shapes-xl"):
        assert taesd.find(SD15, teacher=resolver.builtin("checkpoints", f"builtin:{name}")) == distilled
    assert taesd.find(SD15, teacher=distilled.parent / "shapes" / "vae") == distilled
    # another model's VAE (another latent space): the user's TAESD for the family
    assert taesd.find(SD15, teacher=resolver.builtin("checkpoints", "builtin:tiny-sd15")) == decoder


def test_a_preview_is_the_tiny_decode_in_0_1(runner, tiny):
    vae = vae_of(runner, tiny["folder"]).vae
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        expected = vae.decode(latent).sample.clamp(-1, 1) / 2 + 0.5
    preview = taesd.decode_preview(vae, latent)
    assert preview.shape == (1, 3, 64, 64) and torch.allclose(preview, expected, atol=1e-6)
    assert preview.min() < 0.2 and preview.max() > 0.8  # not a constant picture
