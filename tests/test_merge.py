"""Model and CLIP merging (ComfyUI's merge nodes) and CheckpointSave: merged weights equal merging by
hand, block ratios follow the LDM block names, and a saved checkpoint loads back in the LDM layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sdflow.errors import NodeError, UserError
from sdflow.graphs import loads
from sdflow.models.ldm_keys import unet_mapping
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sdflow" / "builtin" / "tiny-sd15"
TINY_XL = ROOT / "sdflow" / "builtin" / "tiny-sdxl"


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-sd15 with every UNet and text-encoder weight moved by seeded noise: a second model of
    the same architecture."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    folder = tmp_path_factory.mktemp("merge") / "other"
    shutil.copytree(TINY, folder, ignore=shutil.ignore_patterns("unet", "text_encoder"))
    generator = torch.Generator().manual_seed(7)
    for sub, cls in (("unet", UNet2DConditionModel), ("text_encoder", CLIPTextModel)):
        module = cls.from_pretrained(TINY / sub)
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        module.save_pretrained(folder / sub)
    return folder


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("out")))


def merged(runner: Runner, other: Path, node: str, output: str = "merged.model") -> dict:
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  b: {{type: LoadCheckpoint, checkpoint: "{other}"}}
  merged: {node}
"""
    result = runner.run(loads(text, "merge.yaml"), outputs=["merged", "a", "b"])
    return {
        "merged": result[output],
        "a": result["a.model"],
        "b": result["b.model"],
        "ca": result["a.clip"],
        "cb": result["b.clip"],
    }


def test_model_merge_simple_is_the_weighted_sum_of_the_two_models(runner, other):
    got = merged(
        runner, other, "{type: ModelMergeSimple, model1: !link a.model, model2: !link b.model, ratio: 0.3}"
    )
    a, b = got["a"].unet.state_dict(), got["b"].unet.state_dict()
    mine = got["merged"].unet.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the premise: two different models
    for name, value in mine.items():
        assert torch.equal(value, 0.3 * a[name] + 0.7 * b[name]), name


def test_merging_leaves_both_inputs_as_they_were(runner, other):
    before = {
        k: v.clone()
        for k, v in merged(
            runner, other, "{type: ModelMergeAdd, model1: !link a.model, model2: !link b.model}"
        )["a"]
        .unet.state_dict()
        .items()
    }
    again = merged(
        runner, other, "{type: ModelMergeSimple, model1: !link a.model, model2: !link b.model, ratio: 0.5}"
    )
    assert all(torch.equal(v, before[k]) for k, v in again["a"].unet.state_dict().items())


def test_add_and_subtract_follow_comfyui(runner, other):
    added = merged(runner, other, "{type: ModelMergeAdd, model1: !link a.model, model2: !link b.model}")
    taken = merged(
        runner,
        other,
        "{type: ModelMergeSubtract, model1: !link a.model, model2: !link b.model, multiplier: 2.0}",
    )
    a, b = added["a"].unet.state_dict(), added["b"].unet.state_dict()
    for name, value in added["merged"].unet.state_dict().items():
        assert torch.equal(value, 1.0 * a[name] + 1.0 * b[name]), name
    for name, value in taken["merged"].unet.state_dict().items():
        assert torch.equal(value, 2.0 * a[name] + -2.0 * b[name]), name


def block_of(unet: torch.nn.Module, name: str) -> str:
    return unet_mapping(dict(unet.config), "")(name).key


def test_model_merge_blocks_pick_each_ratio_by_the_ldm_block(runner, other):
    got = merged(
        runner,
        other,
        "{type: ModelMergeBlocks, model1: !link a.model, model2: !link b.model,"
        " input: 0.0, middle: 1.0, out: 0.25}",
    )
    a, b, unet = got["a"].unet.state_dict(), got["b"].unet.state_dict(), got["a"].unet
    seen = set()
    for name, value in got["merged"].unet.state_dict().items():
        key = block_of(unet, name)
        ratio = 1.0 if key.startswith("middle") else 0.25 if key.startswith("out") else 0.0
        seen.add(ratio)
        assert torch.equal(value, ratio * a[name] + (1.0 - ratio) * b[name]), (name, key)
    assert seen == {0.0, 1.0, 0.25}  # every block kind was met (time_embed takes input's ratio)


def test_model_merge_sd1_takes_a_ratio_per_numbered_block(runner, other):
    got = merged(
        runner,
        other,
        "{type: ModelMergeSD1, model1: !link a.model, model2: !link b.model, input_blocks_1: 0.0}",
    )
    a, b, unet = got["a"].unet.state_dict(), got["b"].unet.state_dict(), got["a"].unet
    changed = 0
    for name, value in got["merged"].unet.state_dict().items():
        in_block = block_of(unet, name).startswith("input_blocks.1.")
        changed += in_block
        assert torch.equal(value, b[name] if in_block else a[name]), name
    assert changed > 0


def test_a_merge_of_other_architectures_is_a_located_error(runner, other):
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  b: {{type: LoadCheckpoint, checkpoint: builtin:shapes}}
  merged: {{type: ModelMergeSimple, model1: !link a.model, model2: !link b.model, ratio: 0.5}}
"""
    with pytest.raises(NodeError) as caught:
        runner.run(loads(text, "merge.yaml"), outputs=["merged"])
    assert caught.value.location.node == "merged" and caught.value.location.field == "model2"
    assert "not the same architecture" in str(caught.value)


def test_clip_merge_simple_blends_the_encoders_and_keeps_position_ids(runner, other):
    got = merged(
        runner,
        other,
        "{type: CLIPMergeSimple, clip1: !link a.clip, clip2: !link b.clip, ratio: 0.25}",
        "merged.clip",
    )
    a = dict(got["ca"].text_encoder.named_parameters())
    b = dict(got["cb"].text_encoder.named_parameters())
    mine = got["merged"].text_encoder
    for name, value in mine.named_parameters():
        assert torch.equal(value, 0.25 * a[name] + 0.75 * b[name]), name
    ids = dict(mine.named_buffers())
    assert all(torch.equal(v, dict(got["ca"].text_encoder.named_buffers())[k]) for k, v in ids.items())


def saved(runner: Runner, text: str) -> Path:
    result = runner.run(loads(text, "save.yaml"), outputs=["save"])
    return Path(result["save.files"].paths[0])


def test_a_saved_merge_is_an_ldm_file_that_loads_back_to_the_merged_weights(runner, other, single_files):
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  b: {{type: LoadCheckpoint, checkpoint: "{other}"}}
  merged: {{type: ModelMergeSimple, model1: !link a.model, model2: !link b.model, ratio: 0.4}}
  clip: {{type: CLIPMergeSimple, clip1: !link a.clip, clip2: !link b.clip, ratio: 0.4}}
  save: {{type: CheckpointSave, model: !link merged, clip: !link clip, vae: !link a.vae,
         filename_prefix: merges/mine}}
"""
    path = saved(runner, text)
    assert path.name == "mine_00001.safetensors" and path.parent.name == "merges"
    with safe_open(path, "pt") as handle:
        keys = set(handle.keys())
    with safe_open(single_files["sd15"][0], "pt") as handle:  # written by sdflow's LDM key tables
        reference = set(handle.keys())
    assert keys == reference
    back = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  b: {{type: LoadCheckpoint, checkpoint: "{other}"}}
  merged: {{type: ModelMergeSimple, model1: !link a.model, model2: !link b.model, ratio: 0.4}}
  clip: {{type: CLIPMergeSimple, clip1: !link a.clip, clip2: !link b.clip, ratio: 0.4}}
  loaded: {{type: LoadCheckpoint, checkpoint: "{path}", config: "{TINY}"}}
"""
    result = runner.run(loads(back, "back.yaml"), outputs=["merged", "clip", "loaded"])
    theirs, mine = result["loaded.model"].unet.state_dict(), result["merged.model"].unet.state_dict()
    assert all(torch.equal(theirs[k], mine[k]) for k in mine)
    texts, mine_text = (
        result["loaded.clip"].text_encoder.state_dict(),
        result["clip.clip"].text_encoder.state_dict(),
    )
    assert all(torch.equal(texts[k], mine_text[k]) for k in mine_text)


def test_checkpoint_save_never_overwrites(runner):
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  save: {{type: CheckpointSave, model: !link a.model, clip: !link a.clip, vae: !link a.vae,
         filename_prefix: again/sd}}
"""
    first = saved(runner, text)
    second = saved(Runner(device="cpu", dtype="fp32", output_dir=runner.output_dir), text)
    assert first != second and first.exists() and second.exists()


def test_an_sdxl_checkpoint_saves_both_text_encoders(runner):
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY_XL}"}}
  save: {{type: CheckpointSave, model: !link a.model, clip: !link a.clip, vae: !link a.vae,
         filename_prefix: xl/sdxl}}
"""
    path = saved(runner, text)
    back = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY_XL}"}}
  loaded: {{type: LoadCheckpoint, checkpoint: "{path}", config: "{TINY_XL}"}}
"""
    result = runner.run(loads(back, "back.yaml"), outputs=["a", "loaded"])
    for attribute in ("text_encoder", "text_encoder_2"):
        mine = getattr(result["a.clip"], attribute).state_dict()
        theirs = getattr(result["loaded.clip"], attribute).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), attribute
    assert result["loaded.model"].family == result["a.model"].family


def test_checkpoint_save_refuses_a_prefix_outside_the_output_folder(runner):
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{TINY}"}}
  save: {{type: CheckpointSave, model: !link a.model, clip: !link a.clip, vae: !link a.vae,
         filename_prefix: ../up}}
"""
    with pytest.raises(UserError) as caught:
        runner.run(loads(text, "save.yaml"), outputs=["save"])
    assert "filename_prefix" in str(caught.value) and "inside the output folder" in str(caught.value)
