"""Behaviour of the image and mask nodes: loading pictures and masks, resizing, blending, encoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sdflow.errors import NodeError
from sdflow.models import checkpoints, resolver
from sdflow.nodes.base import RunContext
from sdflow.nodes.library.image_scale import ImageScale
from sdflow.nodes.library.latent_upscale import LatentUpscale
from sdflow.nodes.library.load_image import LoadImage, LoadMask
from sdflow.nodes.library.mask_blend import LatentMaskBlend, MaskBlend, feathered
from sdflow.nodes.library.vae_encode import VAEEncode
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image, Latent, Mask, MaskedImage, Vae

CTX = RunContext(device=torch.device("cpu"), dtype=torch.float32)
EXIF_ORIENTATION = 0x0112
ROTATED_90_CW = 6  # the stored pixels must be turned 90 degrees clockwise to display upright


def pixels_of(path: Path) -> np.ndarray:
    """The file's RGB pixels as (h, w, 3) floats in [0, 1], read without sdflow."""
    return np.asarray(PILImage.open(path).convert("RGB"), dtype=np.float32) / 255.0


def hwc(image: Image) -> np.ndarray:
    return image.pixels[0].permute(1, 2, 0).numpy()


def load_image(path: Path) -> tuple[Image, Mask]:
    out = LoadImage(path=str(path)).run(CTX)
    return out["image"], out["mask"]


def load_mask(path: Path, **fields) -> torch.Tensor:
    return LoadMask(path=str(path), **fields).run(CTX)["mask"].values


def two_colour_picture(mode: str = "RGB") -> PILImage.Image:
    """4 wide, 2 high: left half red, right half blue."""
    picture = PILImage.new(mode, (4, 2), (255, 0, 0) if mode == "RGB" else (255, 0, 0, 255))
    picture.paste((0, 0, 255) if mode == "RGB" else (0, 0, 255, 255), (2, 0, 4, 2))
    return picture


@pytest.fixture(scope="module")
def vae() -> Vae:
    source = resolver.checkpoint("builtin:tiny-sd15")
    return Vae(checkpoints.load(source, torch.device("cpu"), torch.float32).vae)


# -- LoadImage ----------------------------------------------------------------------------------


def test_load_image_gives_rgb_pixels_in_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "two.png"
    two_colour_picture().save(path)
    image, _ = load_image(path)
    assert image.pixels.shape == (1, 3, 2, 4)
    assert image.pixels.dtype == torch.float32
    np.testing.assert_array_equal(hwc(image), pixels_of(path))


def test_load_image_turns_transparent_pixels_into_a_repaint_mask(tmp_path: Path) -> None:
    picture = two_colour_picture("RGBA")
    picture.putpixel((0, 0), (10, 20, 30, 0))  # erased
    picture.putpixel((3, 1), (0, 0, 255, 128))  # half transparent
    path = tmp_path / "erased.png"
    picture.save(path)
    image, mask = load_image(path)
    assert mask.values.shape == (1, 1, 2, 4)
    assert mask.values[0, 0, 0, 0] == 1.0
    assert mask.values[0, 0, 1, 3] == pytest.approx(1 - 128 / 255)
    assert mask.values[0, 0, 0, 1] == 0.0
    # the colour under the transparency is kept, not composited over anything
    assert hwc(image)[0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255])


def test_load_image_without_alpha_gives_an_all_keep_mask(tmp_path: Path) -> None:
    path = tmp_path / "opaque.png"
    two_colour_picture().save(path)
    _, mask = load_image(path)
    assert mask.values.shape == (1, 1, 2, 4)
    assert float(mask.values.abs().sum()) == 0.0


def test_load_image_reads_palette_transparency_as_a_mask(tmp_path: Path) -> None:
    picture = two_colour_picture().convert("P")
    picture.info["transparency"] = picture.getpixel((0, 0))  # red becomes transparent
    path = tmp_path / "palette.png"
    picture.save(path, transparency=picture.getpixel((0, 0)))
    _, mask = load_image(path)
    assert mask.values[0, 0, :, :2].eq(1).all()
    assert mask.values[0, 0, :, 2:].eq(0).all()


def test_load_image_applies_the_exif_orientation(tmp_path: Path) -> None:
    picture = two_colour_picture()
    exif = picture.getexif()
    exif[EXIF_ORIENTATION] = ROTATED_90_CW
    path = tmp_path / "rotated.png"
    picture.save(path, exif=exif)
    image, mask = load_image(path)
    assert image.size == (2, 4)  # turned upright: 2 wide, 4 high
    assert mask.size == (2, 4)
    pixels = hwc(image)
    # turned clockwise, the left (red) half ends on top, the right (blue) half at the bottom
    assert pixels[0, 0].tolist() == [1.0, 0.0, 0.0]
    assert pixels[3, 1].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("suffix", "options", "tolerance"),
    [
        (".jpg", {"quality": 95}, 0.08),
        (".webp", {"lossless": True}, 0.0),
        (".webp", {"quality": 90}, 0.08),
    ],
)
def test_load_image_reads_jpeg_and_webp(tmp_path: Path, suffix: str, options: dict, tolerance: float) -> None:
    source = PILImage.open(Path(__file__).parent.parent / "examples" / "inputs" / "shapes.png")
    path = tmp_path / f"shapes{suffix}"
    source.convert("RGB").save(path, **options)
    image, _ = load_image(path)
    assert image.size == (64, 64)
    expected = np.asarray(source.convert("RGB"), dtype=np.float32) / 255.0
    assert np.abs(hwc(image) - expected).mean() <= tolerance


def test_load_image_repeats_grey_into_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    PILImage.fromarray(np.array([[0, 64], [128, 255]], dtype=np.uint8)).save(path)
    image, _ = load_image(path)
    assert image.pixels.shape == (1, 3, 2, 2)
    assert torch.equal(image.pixels[:, 0], image.pixels[:, 1])
    assert torch.equal(image.pixels[:, 0], image.pixels[:, 2])
    assert image.pixels[0, 0, 0, 1] == pytest.approx(64 / 255)


def test_load_image_scales_16_bit_grey_to_unit_range(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    PILImage.fromarray(np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)).save(path)
    image, _ = load_image(path)
    assert image.pixels[0, 0].flatten().tolist() == pytest.approx([0, 32768 / 65535, 1, 1000 / 65535])


# -- LoadMask -----------------------------------------------------------------------------------


def test_load_mask_reads_grey_levels_with_white_as_repaint(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    PILImage.fromarray(np.array([[0, 255], [128, 255]], dtype=np.uint8)).save(path)
    mask = load_mask(path)
    assert mask.shape == (1, 1, 2, 2)
    assert mask.flatten().tolist() == pytest.approx([0, 1, 128 / 255, 1])


def test_load_mask_reads_a_colour_picture_by_luminance(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    two_colour_picture().save(path)
    mask = load_mask(path)
    assert mask[0, 0, 0, 0] == pytest.approx(76 / 255)  # PIL's luma of pure red: 0.299 * 255
    assert mask[0, 0, 0, 3] == pytest.approx(29 / 255)  # of pure blue: 0.114 * 255


@pytest.mark.parametrize(
    ("channel", "left", "right"), [("red", 1.0, 0.0), ("blue", 0.0, 1.0), ("green", 0, 0)]
)
def test_load_mask_reads_a_named_channel(tmp_path: Path, channel: str, left: float, right: float) -> None:
    path = tmp_path / "colour.png"
    two_colour_picture().save(path)
    mask = load_mask(path, channel=channel)
    assert mask[0, 0, :, :2].eq(left).all()
    assert mask[0, 0, :, 2:].eq(right).all()


def test_load_mask_from_alpha_repaints_where_transparent(tmp_path: Path) -> None:
    picture = two_colour_picture("RGBA")
    picture.putpixel((1, 1), (255, 0, 0, 0))
    path = tmp_path / "erased.png"
    picture.save(path)
    mask = load_mask(path, channel="alpha")
    assert mask[0, 0, 1, 1] == 1.0
    assert float(mask.sum()) == 1.0


def test_load_mask_invert_swaps_repaint_and_keep(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    PILImage.fromarray(np.array([[0, 255, 51]], dtype=np.uint8)).save(path)
    mask = load_mask(path, invert=True)
    assert mask.flatten().tolist() == pytest.approx([1, 0, 1 - 51 / 255])


def test_load_mask_refuses_alpha_from_a_picture_without_one(tmp_path: Path) -> None:
    path = tmp_path / "opaque.png"
    two_colour_picture().save(path)
    problems = LoadMask.precheck({"path": str(path), "channel": "alpha", "invert": False}, RunScope())
    assert len(problems) == 1
    field, message = problems[0]
    assert field == "channel"
    assert "no alpha channel" in message


# -- ImageScale and LatentUpscale ---------------------------------------------------------------


def scale(image: Image, **fields) -> Image:
    return ImageScale(image=image, **fields).run(CTX)["image"]


def test_image_scale_to_width_and_height() -> None:
    image = Image(torch.rand(1, 3, 20, 30))
    assert scale(image, width=12, height=16).size == (12, 16)


def test_image_scale_with_only_a_width_keeps_the_aspect_ratio() -> None:
    image = Image(torch.rand(1, 3, 20, 30))
    assert scale(image, width=60).size == (60, 40)
    assert scale(image, height=10).size == (15, 10)


def test_image_scale_by_factor_with_nearest_repeats_pixels() -> None:
    image = Image(torch.rand(2, 3, 4, 5))
    doubled = scale(image, factor=2.0, resample="nearest")
    assert doubled.pixels.shape == (2, 3, 8, 10)
    assert torch.equal(doubled.pixels, image.pixels.repeat_interleave(2, -1).repeat_interleave(2, -2))


def test_image_scale_keeps_values_in_unit_range_with_lanczos() -> None:
    checker = (torch.arange(64).view(8, 8) % 2).float().expand(1, 3, 8, 8)
    bigger = scale(Image(checker), factor=3.0, resample="lanczos")
    assert bigger.size == (24, 24)
    assert float(bigger.pixels.min()) >= 0.0
    assert float(bigger.pixels.max()) <= 1.0


def upscale(latent: Latent, **fields) -> Latent:
    return LatentUpscale(latent=latent, **fields).run(CTX)["latent"]


def test_latent_upscale_by_factor() -> None:
    latent = Latent(torch.randn(1, 4, 8, 6))
    assert upscale(latent, factor=2.0).samples.shape == (1, 4, 16, 12)
    assert upscale(latent, factor=1.5, mode="bicubic").samples.shape == (1, 4, 12, 9)


def test_latent_upscale_to_a_pixel_size() -> None:
    latent = Latent(torch.randn(1, 4, 8, 8))
    assert upscale(latent, width=128, height=96).samples.shape == (1, 4, 12, 16)
    assert upscale(latent, width=96).samples.shape == (1, 4, 12, 12)


def test_latent_upscale_resizes_the_noise_mask_and_masked_image_with_it() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:, 4:] = 1.0
    masked = MaskedImage(
        torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), 0.18215, False, torch.Generator().get_state()
    )
    latent = Latent(torch.randn(1, 4, 8, 8), noise_mask=mask, masked_image=masked)
    bigger = upscale(latent, factor=2.0, mode="nearest")
    assert bigger.noise_mask is not None and bigger.masked_image is not None
    assert torch.equal(bigger.noise_mask, mask.repeat_interleave(2, -1).repeat_interleave(2, -2))
    assert bigger.masked_image.mean.shape == (1, 4, 16, 16)
    assert bigger.noise is None


# -- MaskBlend and feathering -------------------------------------------------------------------


def square_mask(size: int = 32, start: int = 8, stop: int = 24) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[..., start:stop, start:stop] = 1.0
    return mask


def test_paste_back_leaves_every_pixel_outside_the_mask_equal_to_the_background() -> None:
    background, foreground = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    mask = square_mask()
    for feather in (0.0, 2.0):
        out = MaskBlend(
            background=Image(background), foreground=Image(foreground), mask=Mask(mask), feather=feather
        ).run(CTX)["image"]
        outside = (mask == 0).expand_as(background)
        assert torch.equal(out.pixels[outside], background[outside])
        inside = out.pixels[:, :, 16, 16]  # the middle of the mask
        assert torch.allclose(inside, foreground[:, :, 16, 16], atol=1e-3 if feather else 0.0)


def test_feathering_softens_the_edge_inside_the_mask_only() -> None:
    mask = square_mask()
    soft = feathered(mask, 2.0)
    assert torch.equal(soft[mask == 0], torch.zeros_like(soft[mask == 0]))
    edge = soft[0, 0, 8, 16]  # on the mask's border
    assert 0.0 <= float(edge) < 0.2
    assert 0.2 < float(soft[0, 0, 10, 16]) < 1.0  # ramping up inside
    assert float(soft[0, 0, 16, 16]) == pytest.approx(1.0, abs=1e-4)  # the middle stays repainted
    assert torch.equal(feathered(mask, 0.0), mask)


def test_mask_blend_resizes_a_smaller_mask_of_the_same_shape() -> None:
    background, foreground = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
    half = torch.zeros(1, 1, 8, 8)
    half[..., :, 4:] = 1.0
    out = MaskBlend(background=Image(background), foreground=Image(foreground), mask=Mask(half)).run(CTX)
    pixels = out["image"].pixels
    assert pixels.shape == (1, 3, 32, 32)
    assert float(pixels[..., :, :14].max()) == 0.0
    assert float(pixels[..., :, 18:].min()) == 1.0


def test_mask_blend_refuses_a_mask_of_another_shape() -> None:
    node = MaskBlend(
        background=Image(torch.zeros(1, 3, 32, 32)),
        foreground=Image(torch.ones(1, 3, 32, 32)),
        mask=Mask(torch.ones(1, 1, 32, 16)),
    )
    with pytest.raises(NodeError) as caught:
        node.run(CTX)
    assert caught.value.location.field == "mask"
    assert "same shape" in caught.value.message


def test_latent_mask_blend_shrinks_a_pixel_mask_to_the_latent() -> None:
    background, foreground = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 32:, :] = 1.0
    out = LatentMaskBlend(background=Latent(background), foreground=Latent(foreground), mask=Mask(mask)).run(
        CTX
    )["latent"]
    assert torch.equal(out.samples[..., :4, :], background[..., :4, :])
    assert torch.equal(out.samples[..., 4:, :], foreground[..., 4:, :])


# -- VAEEncode ----------------------------------------------------------------------------------


def encode(vae: Vae, image: Image, **fields) -> Latent:
    return VAEEncode(vae=vae, image=image, **fields).run(CTX)["latent"]


def test_vae_encode_resizes_sides_down_to_multiples_of_8(vae: Vae) -> None:
    latent = encode(vae, Image(torch.rand(1, 3, 53, 70)))
    assert latent.samples.shape == (1, 4, 6, 8)


def test_vae_encode_attaches_a_binary_noise_mask_at_latent_size(vae: Vae) -> None:
    soft = square_mask(64, 16, 48) * 0.75  # grey 0.75: repaint, after binarizing at 0.5
    latent = encode(vae, Image(torch.rand(1, 3, 64, 64)), mask=Mask(soft))
    assert latent.noise_mask is not None and latent.masked_image is not None
    assert latent.noise_mask.shape == (1, 1, 8, 8)
    assert set(latent.noise_mask.unique().tolist()) == {0.0, 1.0}
    assert float(latent.noise_mask.sum()) == 16.0
    assert latent.masked_image.latents is None  # drawn later by AddNoise, after the noise


def test_vae_encode_sampling_draws_from_the_seeded_stream_and_mode_does_not(vae: Vae) -> None:
    image = Image(torch.rand(1, 3, 64, 64))
    seeded = torch.Generator().manual_seed(3)
    untouched = seeded.get_state()
    torch.randn(1, 4, 8, 8, generator=seeded)
    after_one_draw = seeded.get_state()
    sampled = encode(vae, image, seed=3)
    mode = encode(vae, image, seed=3, posterior="mode")
    assert sampled.rng_state is not None and mode.rng_state is not None
    assert torch.equal(sampled.rng_state, after_one_draw)
    assert torch.equal(mode.rng_state, untouched)
