"""Tiled VAE decode/encode: memory bounded by the tile, results close to the untiled pass; and the
model settings (sliced attention, channels_last, offload) leave the pictures as they were."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import sdflow
from sdflow.nodes.base import RunContext
from sdflow.nodes.checkpoints import BUILTIN_ROOT, load
from sdflow.nodes.library.encode import VAEEncode
from sdflow.nodes.library.vae import VAEDecode
from sdflow.nodes.tiling import run_tiled, wants_tiles
from sdflow.nodes.types import Image, Latent, Vae
from sdflow.runner import Runner
from sdflow.runner.accel import Acceleration, ModelOffload

CPU = torch.device("cpu")
CTX = RunContext(CPU, torch.float32)
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def vae() -> Vae:
    return Vae(load(str(BUILTIN_ROOT / "shapes"), CPU, torch.float32).vae)


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


def _tiny_txt2img(runner: Runner) -> torch.Tensor:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = "builtin:tiny-sd15"
    return runner.run(graph, inputs={"steps": 2}, outputs=["decoded"]).tensor("decoded")


def test_sliced_attention_gives_the_same_picture(tmp_path: Path) -> None:
    plain = _tiny_txt2img(Runner(device="cpu", dtype="fp32"))
    sliced = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(attention="sliced"))

    assert torch.allclose(_tiny_txt2img(sliced), plain, atol=1e-4)


def test_channels_last_gives_the_same_picture() -> None:
    plain = _tiny_txt2img(Runner(device="cpu", dtype="fp32"))
    nhwc = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(channels_last=True))

    assert torch.allclose(_tiny_txt2img(nhwc), plain, atol=1e-4)
    unet = next(v for v in nhwc.models._entries.values())[0]["model"].unet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_model_settings_are_part_of_the_cache_keys() -> None:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    plain = Runner(device="cpu", dtype="fp32").keys(graph)
    sliced = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(attention="sliced")).keys(graph)

    assert plain["ckpt"] != sliced["ckpt"]


def test_offload_is_nothing_to_do_on_the_cpu() -> None:
    acceleration = Acceleration(offload="model")

    assert acceleration.load_device(CPU) == CPU and acceleration.key(CPU) == ""
    assert acceleration.load_device(torch.device("cuda")) == CPU


def test_offloaded_models_take_turns_on_the_device_and_their_inputs_follow() -> None:
    # On a CPU-only machine the "device" is the CPU too; what is checked is the turn-taking.
    group = ModelOffload(CPU)
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    group.add(first)
    group.add(second)

    first(torch.ones(1, 2))
    assert group.resident is first
    second(torch.ones(1, 2))
    assert group.resident is second and first.sdflow_execution_device == CPU
