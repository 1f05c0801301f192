"""ComfyUI's everyday latent and image utilities: LatentUpscaleBy (bislerp too), LatentComposite(Masked),
RepeatLatentBatch, ImagePadForOutpaint and ConditioningZeroOut."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdflow.errors import NodeError
from sdflow.nodes.base import RunContext
from sdflow.nodes.library.conditioning_zero_out import ConditioningZeroOut
from sdflow.nodes.library.image_pad_for_outpaint import ImagePadForOutpaint
from sdflow.nodes.library.latent_composite import LatentComposite, LatentCompositeMasked
from sdflow.nodes.library.latent_upscale_by import LatentUpscaleBy
from sdflow.nodes.library.repeat_latent_batch import RepeatLatentBatch
from sdflow.nodes.ops.bislerp import bislerp
from sdflow.nodes.types import Conditioning, Image, Latent, Mask

CTX = RunContext(device=torch.device("cpu"), dtype=torch.float32)


def latent(*shape: int, seed: int = 0) -> Latent:
    return Latent(torch.randn(shape, generator=torch.Generator().manual_seed(seed)))


def test_bislerp_turns_directions_on_the_sphere_between_neighbours():
    cells = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # two orthogonal unit vectors
    out = bislerp(cells, 4, 1)[0, :, 0].T  # bilinear positions: 0 (clamped), 0.25, 0.75, 1 (clamped)
    angles = [0.0, 22.5, 67.5, 90.0]
    expected = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in angles])
    assert torch.allclose(out, expected, atol=1e-6)


def test_bislerp_interpolates_lengths_linearly_and_keeps_the_size_it_is_given():
    cells = torch.tensor([[2.0, 0.0], [0.0, 4.0]]).T.reshape(1, 2, 1, 2)
    out = bislerp(cells, 4, 1)[0, :, 0].T
    assert torch.allclose(out.norm(dim=1), torch.tensor([2.0, 2.5, 3.5, 4.0]), atol=1e-6)
    same = torch.randn(2, 4, 5, 6)
    assert torch.allclose(bislerp(same, 6, 5), same, atol=1e-6)


def test_latent_upscale_by_rounds_each_side_and_uses_the_method():
    given = latent(1, 4, 5, 7)
    out = LatentUpscaleBy(latent=given, upscale_method="nearest-exact", scale_by=1.5).run(CTX)["latent"]
    assert out.samples.shape == (1, 4, 8, 10)  # round(7.5) = 8, round(10.5) = 10
    assert torch.equal(out.samples, F.interpolate(given.samples, size=(8, 10), mode="nearest-exact"))
    slerped = LatentUpscaleBy(latent=given, upscale_method="bislerp", scale_by=2.0).run(CTX)["latent"]
    assert torch.equal(slerped.samples, bislerp(given.samples, 14, 10))


def test_latent_upscale_by_resizes_the_noise_mask_with_the_samples():
    given = Latent(torch.zeros(1, 4, 4, 4), noise_mask=torch.ones(1, 1, 4, 4))
    out = LatentUpscaleBy(latent=given, upscale_method="bilinear", scale_by=2.0).run(CTX)["latent"]
    assert out.noise_mask.shape == (1, 1, 8, 8)


def test_latent_composite_pastes_at_the_pixel_offset():
    to, source = latent(1, 4, 8, 8), latent(1, 4, 4, 4, seed=1)
    out = LatentComposite(samples_to=to, samples_from=source, x=16, y=8).run(CTX)["latent"].samples
    assert torch.equal(out[..., 1:5, 2:6], source.samples)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[1:5, 2:6] = False
    assert torch.equal(out[..., outside], to.samples[..., outside])


def test_latent_composite_cuts_what_falls_outside():
    to, source = latent(1, 4, 6, 6), latent(1, 4, 4, 4, seed=1)
    out = LatentComposite(samples_to=to, samples_from=source, x=32, y=32).run(CTX)["latent"].samples
    assert torch.equal(out[..., 4:, 4:], source.samples[..., :2, :2])


def test_latent_composite_feathers_only_the_inner_edges():
    to, source = Latent(torch.zeros(1, 1, 8, 8)), Latent(torch.ones(1, 1, 4, 4))
    out = (
        LatentComposite(samples_to=to, samples_from=source, x=0, y=16, feather=16).run(CTX)["latent"].samples
    )
    region = out[0, 0, 2:6, 0:4]
    assert region[0, 3].item() == pytest.approx(0.5 * 0.5)  # top edge and right edge both ramp: 1/2 * 1/2
    assert region[1, 0].item() == pytest.approx(1.0)  # left side touches the border: no ramp; row 1 = 2/2
    assert region[3, 0].item() == pytest.approx(0.5)  # bottom edge is inside: ramps


def test_latent_composite_masked_blends_through_the_mask():
    destination, source = Latent(torch.zeros(1, 4, 4, 4)), Latent(torch.ones(1, 4, 4, 4))
    mask = Mask(torch.full((1, 1, 32, 32), 0.25))
    out = LatentCompositeMasked(destination=destination, source=source, mask=mask).run(CTX)["latent"].samples
    assert torch.allclose(out, torch.full((1, 4, 4, 4), 0.25))


def test_repeat_latent_batch_repeats_samples_and_refuses_noised_latents():
    given = latent(2, 4, 4, 4)
    out = RepeatLatentBatch(latent=given, amount=3).run(CTX)["latent"]
    assert out.samples.shape[0] == 6 and torch.equal(out.samples[4:], given.samples)
    with pytest.raises(NodeError, match="noised already"):
        RepeatLatentBatch(latent=given.with_(noise=object()), amount=2).run(CTX)


def test_image_pad_for_outpaint_pads_grey_and_masks_the_border_with_a_fading_edge():
    image = Image(torch.zeros(1, 3, 100, 100))
    out = ImagePadForOutpaint(image=image, left=0, top=16, right=24, bottom=0, feathering=10).run(CTX)
    pixels, mask = out["image"].pixels, out["mask"].values
    assert pixels.shape == (1, 3, 116, 124) and mask.shape == (1, 1, 116, 124)
    assert torch.all(pixels[..., :16, :] == 0.5) and torch.all(pixels[..., 16:, :100] == 0.0)
    assert torch.all(mask[..., :16, :] == 1.0) and torch.all(mask[..., :, 100:] == 1.0)
    assert mask[0, 0, 16 + 3, 50].item() == pytest.approx(((10 - 3) / 10) ** 2)  # 3 px below the top pad
    assert mask[0, 0, 60, 0].item() == 0.0  # the unpadded left side does not fade
    assert mask[0, 0, 60, 50].item() == 0.0


def test_conditioning_zero_out_zeroes_embeddings_and_pooled():
    given = Conditioning(torch.randn(1, 77, 8), pooled=torch.randn(1, 8))
    out = ConditioningZeroOut(conditioning=given).run(CTX)["conditioning"]
    assert torch.equal(out.embeds, torch.zeros(1, 77, 8)) and torch.equal(out.pooled, torch.zeros(1, 8))
    assert out.family == given.family and out.sizes == given.sizes
