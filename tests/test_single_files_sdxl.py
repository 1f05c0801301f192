"""SDXL single files (Stability's sgm layout): detection, the same weights as the diffusers folder and
diffusers' own converter, the same images, and the shipped full-size configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from workflows import txt2img

from sdflow.models import checkpoints, resolver
from sdflow.models.detect import detect, inspect
from sdflow.models.families import SDXL, SDXL_REFINER
from sdflow.models.ldm_keys import clip_mapping, openclip_mapping, unet_mapping, vae_mapping
from sdflow.models.loaded import LoadOptions, text_encoder_class

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "sdflow" / "models" / "configs"
CPU = torch.device("cpu")


def load(path: Path, **options) -> object:
    return checkpoints.load(resolver.checkpoint(str(path)), CPU, torch.float32, LoadOptions(**options))


def encoders(loaded) -> list[torch.nn.Module]:
    return [loaded.text_encoder, *loaded.more_text_encoders]


@pytest.mark.parametrize(
    ("name", "family", "pads"),
    [("sdxl", SDXL, ["<|endoftext|>", "!"]), ("sdxl-refiner", SDXL_REFINER, ["!"])],
)
def test_sdxl_files_are_detected_and_load_with_their_tokenizers(single_files, name, family, pads):
    file, folder = single_files[name]
    assert inspect(file).family is family
    loaded = load(file, config=folder)
    assert loaded.family is family
    assert [t.pad_token for t in [loaded.tokenizer, *loaded.more_tokenizers]] == pads
    assert type(encoders(loaded)[-1]).__name__ == "CLIPTextModelWithProjection"  # the pooled embedding


@pytest.mark.parametrize("name", ["sdxl", "sdxl-refiner"])
def test_sdxl_weights_equal_the_folder_and_diffusers_own_converter(single_files, name):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    file, folder = single_files[name]
    ours = load(file, config=folder)
    pipeline_cls = StableDiffusionXLImg2ImgPipeline if "refiner" in name else StableDiffusionXLPipeline
    reference = pipeline_cls.from_single_file(str(file), config=str(folder), local_files_only=True)
    folder_loaded = load(folder)
    reference_encoders = [e for e in (reference.text_encoder, reference.text_encoder_2) if e is not None]
    for other in (reference, folder_loaded):
        pairs = [(ours.unet, other.unet), (ours.vae, other.vae)]
        other_encoders = reference_encoders if other is reference else encoders(other)
        pairs += list(zip(encoders(ours), other_encoders, strict=True))
        for mine, theirs in pairs:
            mine, theirs = mine.state_dict(), theirs.state_dict()
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine)


TXT2IMG = txt2img(
    {"checkpoint": '"builtin:tiny-sdxl"', "config": '""'},
    flow=True,
    ckpt={"checkpoint": "!input checkpoint", "config": "!input config"},
    positive={"text": '"a red circle"'},
    schedule={"sampler": "euler", "steps": 3},
    noised={"seed": 5, "strength": 0.7},
    denoised={"cfg": 4.0},
)


@pytest.mark.parametrize("name", ["sdxl", "sdxl-refiner"])
def test_sdxl_single_file_and_folder_draw_identical_images(runner, single_files, name):
    from sdflow.graphs import loads

    file, folder = single_files[name]
    images = []
    for inputs in ({"checkpoint": str(file), "config": str(folder)}, {"checkpoint": str(folder)}):
        result = runner.run(loads(TXT2IMG, "sdxl-file.yaml"), inputs=inputs, outputs=["decoded"])
        images.append(result["decoded.image"].pixels)
    assert images[0].std() > 0.01
    assert torch.equal(images[0], images[1])


# -- the shipped configs, at full size (meta tensors: no memory) --------------------------------


def full_size(family: str) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """The keys and shapes of a full-size single file of ``family`` (written through our key tables
    from the shipped configs), and each component's parameter count."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    from sdflow.models.detect import LAYOUTS

    folder, layout = CONFIGS / family, next(x for x in LAYOUTS if x.config == family)
    unet_config = json.loads((folder / "unet/config.json").read_text())
    vae_config = json.loads((folder / "vae/config.json").read_text())
    with init_empty_weights():
        modules = [
            ("unet", UNet2DConditionModel.from_config(unet_config), unet_mapping(unet_config)),
            ("vae", AutoencoderKL.from_config(vae_config), vae_mapping(vae_config)),
        ]
        for part in layout.text_encoders:
            config = CLIPTextConfig.from_json_file(folder / part.component / "config.json")
            mapping = openclip_mapping(part.prefix) if part.style == "openclip" else clip_mapping(part.prefix)
            modules.append((part.component, text_encoder_class(config)(config), mapping))
    shapes, counts = {}, {}
    for component, module, mapping in modules:
        counts[component] = sum(p.numel() for p in module.parameters())
        for name, tensor in module.state_dict().items():
            source = mapping(name)
            shapes[source.key] = source.file_shape(tuple(tensor.shape))
    return shapes, counts


@pytest.mark.parametrize(
    ("family", "expected", "diffusers_type", "unet_params", "encoder_params"),
    [
        (
            "sdxl",
            SDXL,
            "xl_base",
            2_567_463_684,
            {"text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
        ),
        ("sdxl_refiner", SDXL_REFINER, "xl_refiner", 2_259_526_660, {"text_encoder_2": 694_659_840}),
    ],
)
def test_shipped_sdxl_configs_are_the_real_architectures(
    family, expected, diffusers_type, unet_params, encoder_params
):
    """Full-size SDXL base and refiner have the published parameter counts, our key table run
    backwards gives what diffusers detects as SDXL, and every UNet key is one its converter reads."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, infer_diffusers_model_type

    shapes, counts = full_size(family)
    assert counts["unet"] == unet_params
    assert {k: v for k, v in counts.items() if k.startswith("text")} == encoder_params
    assert detect(shapes).family is expected
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert infer_diffusers_model_type(meta) == diffusers_type
    unet_config = json.loads((CONFIGS / family / "unet/config.json").read_text())
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    with init_empty_weights():
        unet_keys = set(UNet2DConditionModel.from_config(unet_config).state_dict())
    assert convert_ldm_unet_checkpoint(meta, unet_config).keys() == unet_keys


def test_shipped_sdxl_tokenizers_pad_as_sdxl_does():
    from transformers import CLIPTokenizer

    first = CLIPTokenizer.from_pretrained(CONFIGS / "sdxl" / "tokenizer")
    second = CLIPTokenizer.from_pretrained(CONFIGS / "sdxl" / "tokenizer_2")
    refiner = CLIPTokenizer.from_pretrained(CONFIGS / "sdxl_refiner" / "tokenizer_2")
    assert len(first) == len(second) == len(refiner) == 49408
    ids = first("a photo of a cat", padding="max_length", max_length=77).input_ids
    ids_2 = second("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert ids[:7] == ids_2[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert ids[7] == 49407 and ids_2[7] == second.convert_tokens_to_ids("!") == 0
    assert refiner("x").input_ids == second("x").input_ids
