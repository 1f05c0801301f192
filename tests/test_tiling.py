"""Tiled VAE decode/encode: memory bounded by the tile, results close to the untiled pass."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sdflow.nodes.base import RunContext
from sdflow.nodes.library.vae_decode import VAEDecode
from sdflow.nodes.library.vae_encode import VAEEncode
from sdflow.nodes.ops.tiling import run_tiled, wants_tiles
from sdflow.nodes.types import Image, Latent, Vae

CPU = torch.device("cpu")
CTX = RunContext(CPU, torch.float32)


@pytest.fixture(scope="module")
def vae() -> Vae:
    from diffusers import AutoencoderKL

    shapes = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "shapes"
    return Vae(AutoencoderKL.from_pretrained(shapes, subfolder="vae").eval())


def _latent() -> torch.Tensor:
    return torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))


def _decode(vae: Vae, latent: torch.Tensor, tiled: str, tile: int = 128, overlap: int = 32) -> torch.Tensor:
    node = VAEDecode.model_construct(
        vae=vae, latent=Latent(latent), tiled=tiled, tile_size=tile, tile_overlap=overlap
    )
    return node.run(CTX)["image"].pixels


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / float(((a - b) ** 2).mean()))


def test_blending_overlapping_tiles_of_a_pointwise_function_is_exact() -> None:
    x = torch.rand(2, 3, 40, 56)

    out = run_tiled(lambda t: (t * 2).repeat_interleave(8, -1).repeat_interleave(8, -2), x, 16, 6, 8)

    assert torch.allclose(out, (x * 2).repeat_interleave(8, -1).repeat_interleave(8, -2), atol=1e-6)


def test_no_tile_is_larger_than_the_tile_size() -> None:
    seen = []

    run_tiled(lambda t: seen.append(t.shape[-2:]) or t, torch.zeros(1, 4, 100, 70), 32, 8, 1)

    assert max(max(shape) for shape in seen) <= 32 and len(seen) == 4 * 3


def test_tiled_decode_is_close_to_the_untiled_decode(vae: Vae) -> None:
    latent = _latent()

    full, tiled = _decode(vae, latent, "off"), _decode(vae, latent, "on")

    assert tiled.shape == full.shape == (1, 3, 256, 256)
    assert _psnr(tiled, full) > 25  # the VAE's group norms and attention see one tile at a time
    assert not torch.equal(tiled, full)


def test_tiled_encode_is_close_to_the_untiled_encode(vae: Vae) -> None:
    image = Image(_decode(vae, _latent(), "off"))

    def encode(tiled: str) -> torch.Tensor:
        node = VAEEncode.model_construct(
            vae=vae,
            image=image,
            mask=None,
            posterior="mode",
            seed=0,
            tiled=tiled,
            tile_size=128,
            tile_overlap=32,
        )
        return node.run(CTX)["latent"].samples

    full, tiled = encode("off"), encode("on")
    assert tiled.shape == full.shape == (1, 4, 32, 32)
    assert float((tiled - full).abs().mean()) < 0.1 * float(full.abs().mean())


def test_auto_tiles_only_large_images() -> None:
    assert not wants_tiles("auto", 512, 512, 512)
    assert not wants_tiles("auto", 768, 768, 512)
    assert wants_tiles("auto", 1024, 1024, 512)
    assert wants_tiles("on", 768, 512, 512) and not wants_tiles("off", 2048, 2048, 512)
    assert not wants_tiles("on", 256, 256, 512)  # one tile is the whole image
