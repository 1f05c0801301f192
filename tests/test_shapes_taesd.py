"""builtin:shapes-taesd, the tiny autoencoder distilled from the shapes VAE (tools/shapes/train_taesd.py):
the latent of a shapes picture decodes through it close to the full VAE's decode (SSIM; a random
AutoencoderTiny of the same layout is far below), and the picture keeps the caption's colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_shapes_semantic import data
from workflows import txt2img

from sdflow.golden.compare import ssim
from sdflow.graphs import loads
from sdflow.models import resolver
from sdflow.runner import Runner

TINY = "builtin:shapes-taesd"
# measured SSIM against the shapes VAE's decode: 0.77-0.93 over six captions (docs/speed.md); the threshold
# sits a little below the lowest
MIN_SSIM = 0.75
CASES = [("circle", "red", "blue", 1), ("square", "yellow", "black", 2), ("triangle", "green", "white", 3)]


def both_decodes(tiny: str) -> str:
    """builtin:shapes txt2img, its latent decoded by the shapes VAE (``decoded``) and by ``tiny``."""
    return txt2img(
        {
            "prompt": '{type: str, default: "a red circle on a blue background"}',
            "seed": "{type: int, default: 1}",
            "steps": "{type: int, default: 20}",
            "sampler": "{type: str, default: euler}",
            "cfg": "{type: float, default: 5.0}",
        },
        ckpt={"checkpoint": '"builtin:shapes"'},
        tiny={"type": "LoadVAE", "file": f'"{tiny}"'},
        tiny_decoded={"type": "VAEDecode", "vae": "!link tiny", "latent": "!link denoised"},
    )


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def decodes(runner: Runner, tiny: str, caption: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(full, tiny) pixels (1, 3, h, w) in [0, 1] of one picture."""
    result = runner.run(
        loads(both_decodes(tiny), "taesd.yaml"),
        inputs={"prompt": caption, "seed": seed},
        outputs=["decoded", "tiny_decoded"],
    )
    return tuple(result[f"{node}.image"].pixels.numpy() for node in ("decoded", "tiny_decoded"))


def dominant(pixels: np.ndarray) -> set[str]:
    """The two most frequent named colours of (1, 3, h, w) pixels in [0, 1]."""
    image = (pixels[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)
    return set(list(data.nearest_color_counts(image))[:2])


def test_the_builtin_loads_as_an_autoencoder_tiny_under_2_mb(runner):
    folder = resolver.resolve("vae", TINY)
    assert resolver.builtin_names("vae") == ["shapes-taesd"]  # not a ControlNet, not a checkpoint
    text = f'version: 1\nnodes:\n  vae: {{type: LoadVAE, file: "{TINY}"}}\n'
    vae = runner.run(loads(text, "vae.yaml"), outputs=["vae"])["vae.vae"].vae
    assert type(vae).__name__ == "AutoencoderTiny" and vae.config.scaling_factor == 1.0
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 2_000_000


@pytest.mark.parametrize(("shape", "colour", "background", "seed"), CASES)
def test_a_shapes_latent_decodes_like_the_full_vae_with_the_caption_colours(
    runner, shape, colour, background, seed
):
    full, tiny = decodes(runner, TINY, data.caption_for(shape, colour, background), seed)

    assert ssim(full, tiny) >= MIN_SSIM
    assert dominant(full) == dominant(tiny) == {colour, background}


def test_a_random_autoencoder_tiny_of_the_same_layout_is_far_below(runner, tmp_path: Path):
    from diffusers import AutoencoderTiny

    config = AutoencoderTiny.load_config(resolver.resolve("vae", TINY))
    torch.manual_seed(0)
    AutoencoderTiny.from_config(config).save_pretrained(tmp_path / "random")
    full, tiny = decodes(runner, (tmp_path / "random").as_posix(), "a red circle on a blue background", 1)

    assert ssim(full, tiny) < MIN_SSIM - 0.2
