"""Combined, area, mask and timestep-range conditioning: each piece predicted on its area, weighted
(strength × mask or feathered edges) and blended as ComfyUI's sampler blends them."""

from __future__ import annotations

import pytest
import torch

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.nodes.ops import regions
from sdflow.nodes.types import Conditioning, Region
from sdflow.runner import Runner


def piece(value: float, **region) -> Conditioning:
    return Conditioning(torch.full((1, 2, 4), value), region=Region(**region) if region else None)


def constant(window: torch.Tensor, part: Conditioning) -> torch.Tensor:
    """A stand-in UNet: predicts the piece's value everywhere it is asked."""
    return torch.full((window.shape[0], 4, *window.shape[-2:]), float(part.embeds.mean()))


def predict(*pieces: Conditioning, size: int = 16, timestep: float = 500.0) -> torch.Tensor:
    side = Conditioning(pieces[0].embeds, parts=pieces)
    latent = torch.zeros(1, 4, size, size)
    return regions.predict(constant, latent, None, timestep, regions.prepare(side, (size, size), latent), 4)


def test_pieces_are_averaged_by_strength():
    out = predict(piece(1.0, strength=1.0), piece(5.0, strength=3.0))
    assert torch.allclose(out, torch.full_like(out, (1.0 + 15.0) / 4))


def test_an_area_acts_on_its_cells_with_inner_edges_feathered():
    # the left half (x 0..63 px = 8 cells): its left, top and bottom edges touch the border
    out = predict(piece(0.0), piece(8.0, area=(0, 0, 64, 128)))[0, 0]
    assert torch.allclose(out[:, 8:], torch.zeros(16, 8))  # outside the area: the full piece alone
    # fading towards the inner edge over min(8, 8 // 4) = 2 cells, as ComfyUI fades
    weights = torch.tensor([1.0] * 6 + [1.0, 0.5])
    expected = 8.0 * weights / (1.0 + weights)
    assert torch.allclose(out[5, :8], expected)


def test_cells_no_conditioning_covers_predict_zero():
    out = predict(piece(3.0, area=(0, 0, 64, 64)))[0, 0]
    assert torch.all(out[8:, :] == 0) and torch.all(out[:, 8:] == 0)
    assert out[0, 0] == pytest.approx(3.0)


def test_a_mask_weights_the_piece_instead_of_feathering():
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., :, :64] = 1.0
    out = predict(piece(0.0), piece(4.0, mask=mask, mask_strength=1.0))[0, 0]
    assert torch.allclose(out[:, :7], torch.full((16, 7), 2.0))  # (0 + 4) / 2 where the mask is 1
    assert torch.allclose(out[:, 9:], torch.zeros(16, 7))


def test_a_timestep_range_switches_pieces_on_and_off():
    early, late = piece(1.0, start=0.0, end=0.5), piece(9.0, start=0.5, end=1.0)
    assert predict(early, late, timestep=900.0)[0, 0, 0, 0] == pytest.approx(1.0)
    assert predict(early, late, timestep=100.0)[0, 0, 0, 0] == pytest.approx(9.0)
    assert regions.active(Region(start=0.2), 999 * 0.8) and not regions.active(Region(start=0.2), 900.0)


def test_percent_areas_follow_the_latent_size():
    assert regions.latent_area(Region(area=(0.5, 0.25, 0.5, 0.5), percent=True), (16, 32)) == (4, 16, 8, 16)


WORKFLOW = """
version: 1
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}
  red: {type: CLIPEncode, clip: !link ckpt.clip, text: "a red circle"}
  blue: {type: CLIPEncode, clip: !link ckpt.clip, text: "a blue square"}
  negative: {type: CLIPEncode, clip: !link ckpt.clip, text: ""}
  left: {type: ConditioningSetArea, conditioning: !link blue, width: 32, height: 64, x: 0, y: 0}
  both: {type: ConditioningCombine, conditioning_1: !link red, conditioning_2: !link left}
  twice: {type: ConditioningCombine, conditioning_1: !link red, conditioning_2: !link red}
  empty: {type: EmptyLatent, width: 64, height: 64}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 3}
  noised: {type: AddNoise, latent: !link empty, schedule: !link schedule, seed: 2}
  plain: {type: DenoiseLoop, model: !link ckpt.model, positive: !link red, negative: !link negative,
          latent: !link noised, cfg: 5.0}
  same: {type: DenoiseLoop, model: !link ckpt.model, positive: !link twice, negative: !link negative,
         latent: !link noised, cfg: 5.0}
  composed: {type: DenoiseLoop, model: !link ckpt.model, positive: !link both, negative: !link negative,
             latent: !link noised, cfg: 5.0}
"""


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))
    return runner.run(loads(WORKFLOW, "area.yaml"), outputs=["plain", "same", "composed"])


def test_a_prompt_combined_with_itself_draws_the_prompt(result):
    assert torch.allclose(result.tensor("same"), result.tensor("plain"), atol=1e-4)


def test_an_area_prompt_changes_its_half_most(result):
    composed, plain = result.tensor("composed"), result.tensor("plain")
    change = (composed - plain).abs()[0].mean(dim=(0, 1))  # per latent column
    assert change[:4].mean() > 2 * change[6:].mean()  # the left 32 px = 4 latent columns


def test_timestep_range_start_after_end_is_refused(tmp_path):
    ranged = "{type: ConditioningSetTimestepRange, conditioning: !link red, start: 0.8, end: 0.2}"
    text = WORKFLOW.replace("  twice:", f"  ranged: {ranged}\n  twice:")
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    with pytest.raises(UserError, match="after end"):
        runner.run(loads(text, "range.yaml"), outputs=["ranged"])


def test_every_area_gets_an_opposite_on_the_other_side():
    """ComfyUI pairs each area with one of the same area on the other CFG side: the smallest piece
    there containing it (a whole-picture one failing that), with the area's region."""
    negative = piece(0.0)
    positive = Conditioning(
        torch.zeros(1, 2, 4), parts=(piece(1.0), piece(2.0, area=(0, 0, 64, 64), strength=0.5))
    )
    paired_negative, paired_positive = regions.opposite_areas([negative, positive], (16, 16))
    assert paired_positive is positive  # nothing on the negative has an area
    added = paired_negative.pieces[-1]
    assert len(paired_negative.pieces) == 2 and float(added.embeds.mean()) == 0.0
    assert added.region.area == (0, 0, 64, 64) and added.region.strength == 0.5
    again = regions.opposite_areas([paired_negative, positive], (16, 16))[0]
    assert len(again.pieces) == 2  # an area the side already has is not added twice
