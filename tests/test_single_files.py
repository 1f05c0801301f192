"""Single-file checkpoints (original LDM layout): detection, conversion, and the same images as the
diffusers folder holding the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sdflow
from sdflow.models import checkpoints, module_fill, resolver, singlefile
from sdflow.models.detect import LAYOUTS, UnknownLayout, detect, inspect
from sdflow.models.families import SD2, SD15
from sdflow.models.ldm_keys import clip_mapping, openclip_mapping, unet_mapping, vae_mapping
from sdflow.models.loaded import LoadOptions
from sdflow.models.weights import WeightReader

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CPU = torch.device("cpu")
CONFIGS = ROOT / "sdflow" / "models" / "configs"


def load(path: Path, **options) -> object:
    return checkpoints.load(resolver.checkpoint(str(path)), CPU, torch.float32, LoadOptions(**options))


@pytest.mark.parametrize(
    ("name", "family", "channels", "prediction"),
    [
        ("sd15", SD15, 4, "epsilon"),
        ("sd15-inpaint", SD15, 9, "epsilon"),
        ("sd2", SD2, 4, "epsilon"),
        ("sd2-v", SD2, 4, "v_prediction"),
        ("sd2-inpaint", SD2, 9, "epsilon"),
    ],
)
def test_each_family_is_detected_from_keys_and_shapes(single_files, name, family, channels, prediction):
    file, folder = single_files[name]
    found = inspect(file)
    assert (found.family, found.in_channels) == (family, channels)
    loaded = load(file, config=folder)
    assert loaded.family is family
    assert loaded.unet.config.in_channels == channels
    assert loaded.scheduler_config["prediction_type"] == prediction
    assert loaded.tokenizer.pad_token == ("!" if family is SD2 else "<|endoftext|>")


@pytest.mark.parametrize("name", ["sd15", "sd15-inpaint", "sd2", "sd2-v", "sd2-inpaint"])
def test_weights_equal_the_diffusers_folder_and_diffusers_own_converter(single_files, name):
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline

    file, folder = single_files[name]
    ours = load(file, config=folder)
    pipeline_cls = StableDiffusionInpaintPipeline if "inpaint" in name else StableDiffusionPipeline
    reference = pipeline_cls.from_single_file(str(file), config=str(folder), local_files_only=True)
    folder_loaded = load(folder)
    for component in ("unet", "vae", "text_encoder"):
        mine = getattr(ours, component).state_dict()
        for source in (reference, folder_loaded):
            other = getattr(source, component).state_dict()
            assert mine.keys() == other.keys(), component
            assert all(torch.equal(mine[k], other[k]) for k in mine), component


TXT2IMG = EXAMPLES / "txt2img.yaml"


def draw(runner, checkpoint: Path, config: Path | None = None) -> torch.Tensor:
    graph = sdflow.load(TXT2IMG)
    if config is not None:
        graph["ckpt"]["config"] = str(config)
    inputs = {"checkpoint": str(checkpoint), "steps": 3, "seed": 5, "prompt": "a red circle"}
    return runner.run(graph, inputs=inputs).tensor("decoded")


@pytest.mark.parametrize("name", ["sd15", "sd2", "sd2-v"])
def test_single_file_and_folder_draw_identical_images(runner, single_files, name):
    file, folder = single_files[name]
    from_file = draw(runner, file, folder)
    from_folder = draw(runner, folder)
    assert from_file.std() > 0.01
    assert torch.equal(from_file, from_folder)


def test_v_prediction_changes_the_image(runner, single_files):
    """The same weights read as eps or v draw different pictures: the prediction type is used."""
    assert not torch.equal(draw(runner, *single_files["sd2"]), draw(runner, *single_files["sd2-v"]))


@pytest.mark.parametrize("name", ["sd15-inpaint", "sd2-inpaint"])
def test_inpainting_single_file_and_folder_draw_identical_images(runner, examples, single_files, name):
    file, folder = single_files[name]
    images = []
    for checkpoint, config in ((file, folder), (folder, None)):
        graph = sdflow.load(examples / "inpaint.yaml")
        if config is not None:
            graph["ckpt"]["config"] = str(config)
        inputs = {"checkpoint": str(checkpoint), "steps": 3}
        images.append(runner.run(graph, inputs=inputs).tensor("decoded"))
    assert torch.equal(images[0], images[1])


# -- the shipped configs, at full size (meta tensors: no memory) --------------------------------


def full_size_header(family: str) -> dict[str, tuple[int, ...]]:
    """The keys and shapes a full-size single file of ``family`` has, made from the shipped configs
    through our key tables in the writing direction (on the meta device)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder, layout = CONFIGS / family, next(x for x in LAYOUTS if x.config == family)
    part = layout.text_encoders[0]
    with init_empty_weights():
        unet_config = json.loads((folder / "unet/config.json").read_text())
        vae_config = json.loads((folder / "vae/config.json").read_text())
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
        text = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "text_encoder/config.json"))
    text_mapping = openclip_mapping(part.prefix) if part.style == "openclip" else clip_mapping(part.prefix)
    shapes = {}
    for module, mapping in (
        (unet, unet_mapping(unet_config)),
        (vae, vae_mapping(vae_config)),
        (text, text_mapping),
    ):
        for name, tensor in module.state_dict().items():
            source = mapping(name)
            shapes[source.key] = source.file_shape(tuple(tensor.shape))
    return shapes


@pytest.mark.parametrize(("family", "expected"), [("sd15", SD15), ("sd2", SD2)])
def test_full_size_layout_matches_diffusers_key_names(family, expected):
    """Our table, run backwards on the shipped configs, gives the keys diffusers' converter reads."""
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        infer_diffusers_model_type,
    )

    shapes = full_size_header(family)
    assert detect(shapes).family is expected
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert infer_diffusers_model_type(meta) == {"sd15": "v1", "sd2": "v2"}[family]
    unet_config = json.loads((CONFIGS / family / "unet/config.json").read_text())
    converted = convert_ldm_unet_checkpoint(meta, unet_config)
    assert converted.keys() == {k for k in _unet_keys(unet_config)}
    vae_config = json.loads((CONFIGS / family / "vae/config.json").read_text())
    vae_keys = [k for k in shapes if k.startswith("first_stage_model.")]
    assert len(convert_ldm_vae_checkpoint(meta, vae_config)) == len(vae_keys)


def _unet_keys(config: dict) -> set[str]:
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        return set(UNet2DConditionModel.from_config(config).state_dict())


# -- prediction ---------------------------------------------------------------------------------


def rewritten(file: Path, out: Path, change=None, metadata=None) -> Path:
    state = load_file(file)
    if change is not None:
        change(state)
    save_file(state, out, metadata=metadata)
    return out


def prediction_of(path: Path, requested: str = "auto") -> str:
    with WeightReader(path) as reader:
        return singlefile.resolve_prediction(detect(reader.shapes, reader.metadata), requested, reader)


def test_auto_prediction_reads_markers_metadata_and_comfyui_statistic(single_files, tmp_path):
    file = single_files["sd2"][0]
    assert prediction_of(file) == "epsilon"
    assert prediction_of(single_files["sd2-v"][0]) == "v_prediction"  # modelspec.prediction_type: v
    marker = rewritten(file, tmp_path / "m.safetensors", lambda s: s.update(v_pred=torch.tensor([])))
    assert prediction_of(marker) == "v_prediction"
    architecture = {"modelspec.architecture": "stable-diffusion-v2-768-v"}
    assert prediction_of(rewritten(file, tmp_path / "a.safetensors", metadata=architecture)) == "v_prediction"
    key = "model.diffusion_model.output_blocks.3.1.transformer_blocks.0.norm1.bias"
    wide = rewritten(file, tmp_path / "w.safetensors", lambda s: s[key].mul_(0.2 / s[key].std()))
    assert prediction_of(wide) == "v_prediction"
    assert prediction_of(wide, "epsilon") == "epsilon"  # the field overrides detection
    assert prediction_of(single_files["sd15"][0]) == "epsilon"  # the statistic is for SD 2.x only


def test_prediction_field_overrides_the_folder_scheduler(single_files):
    loaded = load(single_files["sd2-v"][1], prediction="epsilon")
    assert loaded.scheduler_config["prediction_type"] == "epsilon"


# -- what is not a checkpoint -------------------------------------------------------------------


def test_unknown_layout_lists_what_was_recognised(single_files, tmp_path):
    state = load_file(single_files["sd15"][0])
    vae_only = {k.removeprefix("first_stage_model."): v for k, v in state.items() if k.startswith("first")}
    save_file(vae_only, tmp_path / "vae.safetensors")
    with pytest.raises(UnknownLayout, match=r"Recognised: a VAE on its own .*LoadVAE"):
        inspect(tmp_path / "vae.safetensors")
    no_text = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}
    save_file(no_text, tmp_path / "unet_vae.safetensors")
    expected = r"an SD-style UNet .*an SD-style VAE.*Loadable single files: .*SD 2"
    with pytest.raises(UnknownLayout, match=expected):
        inspect(tmp_path / "unet_vae.safetensors")


def test_weights_of_another_architecture_are_named(single_files):
    file = single_files["sd15"][0]
    with pytest.raises(module_fill.ArchitectureMismatch, match=r"UNet weights do not fit .*of another shape"):
        load(file, config=CONFIGS / "sd15")  # tiny weights, full-size configs


def test_shipped_tokenizers_are_the_real_clip_vocabulary():
    from transformers import CLIPTokenizer

    for family, pad in (("sd15", "<|endoftext|>"), ("sd2", "!")):
        tokenizer = CLIPTokenizer.from_pretrained(CONFIGS / family / "tokenizer")
        assert len(tokenizer) == 49408 and tokenizer.pad_token == pad
        assert tokenizer("A photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_old_sd1_files_without_the_text_model_level_load(single_files, tmp_path):
    file, folder = single_files["sd15"]
    old = rewritten(file, tmp_path / "old.safetensors")
    state = {k.replace("transformer.text_model.", "transformer."): v for k, v in load_file(old).items()}
    save_file(state, old)
    mine = load(old, config=folder).text_encoder.state_dict()
    reference = load(folder).text_encoder.state_dict()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in reference)


def test_weights_used_in_place_are_copy_on_write(single_files, tmp_path):
    """Same dtype on the CPU: parameters are the file's mapped pages; writing to one (as a weight
    patch might) changes neither the file nor another load of it."""
    file, folder = single_files["sd15"]
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(file.read_bytes())
    first = load(copy, config=folder)
    weight = first.unet.conv_in.weight
    original = weight.clone()
    with torch.no_grad():
        weight.add_(1.0)
    assert copy.read_bytes() == file.read_bytes()
    assert torch.equal(load(copy, config=folder).unet.conv_in.weight, original)
