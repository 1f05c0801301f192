"""SD3 / Flux from the split layout users have (a transformer file, text encoder files, fp8, GGUF): the
same weights as the diffusers folder, and the same txt2img picture as the folder's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from workflows import decoded_pixels, max_diff, txt2img

from sdflow.errors import UserError
from sdflow.models import detect, dit_load, split_load
from sdflow.models.families import FAMILIES
from sdflow.runner import Runner

CPU = torch.device("cpu")
INPUTS = {"seed": 0, "sampler": "euler", "cfg": 1.0, "steps": 3}
GGUF_TOLERANCE = 0.02  # Q8_0 weights (8-bit steps per 32-value block): the picture moves this little


def _graph(
    family: str, unet: dict[str, Any] | None, clip: dict[str, Any] | None, checkpoint: Path | None = None
) -> str:
    """The txt2img graph on builtin:tiny-<family> (or the ``checkpoint`` file, with the built-in's
    configs) with its model / clip taken from the nodes given."""
    ckpt = {"checkpoint": f'"builtin:tiny-{family}"'}
    if checkpoint is not None:
        ckpt = {"checkpoint": f'"{checkpoint}"', "config": f'"builtin:tiny-{family}"'}
    changes: dict[str, Any] = {
        "ckpt": ckpt,
        "positive": {"text": '"a red circle"'},
        "negative": {"text": '""'},
    }
    if unet is not None:
        changes["unet"] = {"type": "LoadDiffusionModel", "config": f'"builtin:tiny-{family}"', **unet}
        changes["schedule"] = {"model": "!link unet.model"}
        changes["denoised"] = {"model": "!link unet.model"}
    if clip is not None:
        changes["te"] = {
            "type": "LoadTextEncoders",
            "kind": family,
            "config": f'"builtin:tiny-{family}"',
            **clip,
        }
        changes["positive"] |= {"clip": "!link te.clip"}
        changes["negative"] = {"clip": "!link te.clip", "text": '""'}
    return txt2img(INPUTS, flow=True, **changes)


def _files(paths: list[Path]) -> str:
    return "[" + ", ".join(f'"{p}"' for p in paths) + "]"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_split_files_draw_the_folders_picture(graph_runner: Runner, sd3_flux_files, family: str) -> None:
    files = sd3_flux_files[family]
    encoders = [files[n] for n in ("t5xxl", "clip_g", "clip_l") if n in files]  # any order
    reference = decoded_pixels(graph_runner, _graph(family, None, None))
    split = _graph(family, {"file": f'"{files["transformer"]}"'}, {"files": _files(encoders)})
    assert max_diff(decoded_pixels(graph_runner, split), reference) == 0.0
    fp8 = decoded_pixels(
        graph_runner, _graph(family, {"file": f'"{files["fp8"]}"', "weight_dtype": "fp8_e4m3fn"}, None)
    )
    upcast = decoded_pixels(graph_runner, _graph(family, {"file": f'"{files["fp8"]}"'}, None))
    assert max_diff(fp8, upcast) == 0.0  # fp8 storage, cast per layer = the same values upcast on load
    assert max_diff(fp8, reference) > 0.0  # 8-bit weights do change it


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_gguf_transformer_draws_its_dequantized_picture(
    graph_runner: Runner, sd3_flux_files, family: str
) -> None:
    pytest.importorskip("gguf")
    files = sd3_flux_files[family]
    reference = decoded_pixels(graph_runner, _graph(family, None, None))
    quantized = decoded_pixels(graph_runner, _graph(family, {"file": f'"{files["gguf"]}"'}, None))
    assert 0.0 < max_diff(quantized, reference) <= GGUF_TOLERANCE


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_transformer_and_encoder_files_load_to_the_folder_weights(sd3_flux_files, family: str) -> None:
    import transformers
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    files = sd3_flux_files[family]
    folder = files["folder"]
    cls = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
    reference = cls.from_pretrained(folder, subfolder="transformer").state_dict()
    for name in ("transformer", "all_in_one"):
        got = dit_load.load_transformer(files[name], CPU, torch.float32, config=folder).module.state_dict()
        assert sorted(got) == sorted(reference)
        assert all(torch.equal(got[k], reference[k]) for k in reference), name
    names = [n for n in ("clip_l", "clip_g", "t5xxl") if n in files]
    for paths in ([files[n] for n in names], [files["all_in_one"]]):
        encoders, _ = split_load.load_text_encoders(paths, FAMILIES[family], CPU, torch.float32, folder)
        for slot, encoder in zip(FAMILIES[family].encoders, encoders, strict=True):
            expected = getattr(transformers, slot.model_class).from_pretrained(folder / slot.folder)
            assert all(torch.equal(encoder.state_dict()[k], v) for k, v in expected.state_dict().items())


def test_a_missing_encoder_and_a_missing_t5_tokenizer_are_named(sd3_flux_files, tmp_path: Path) -> None:
    files = sd3_flux_files["sd3"]
    folder = files["folder"]
    with pytest.raises(split_load.SplitLoadError, match=r"missing: CLIP 48 wide \(text_encoder_2\)"):
        split_load.load_text_encoders(
            [files["clip_l"], files["t5xxl"]], FAMILIES["sd3"], CPU, torch.float32, folder
        )
    # configs without tokenizers: T5's vocabulary is not shipped, and the message says where it goes
    configs = tmp_path / "configs"
    shutil.copytree(folder, configs, ignore=shutil.ignore_patterns("tokenizer_3", "*.safetensors"))
    paths = [files[n] for n in ("clip_l", "clip_g", "t5xxl")]
    with pytest.raises(
        split_load.SplitLoadError, match=r"no T5 tokenizer for t5xxl\.safetensors.*t5_tokenizer"
    ):
        split_load.load_text_encoders(paths, FAMILIES["sd3"], CPU, torch.float32, configs)
    shutil.copytree(folder / "tokenizer_3", files["t5xxl"].parent / "t5_tokenizer", dirs_exist_ok=True)
    encoders, tokenizers = split_load.load_text_encoders(paths, FAMILIES["sd3"], CPU, torch.float32, configs)
    assert type(tokenizers[2]).__name__.startswith("T5Tokenizer") and len(encoders) == 3
    shutil.rmtree(files["t5xxl"].parent / "t5_tokenizer")


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_all_in_one_file_draws_the_folders_picture(
    graph_runner: Runner, sd3_flux_files, family: str
) -> None:
    file = sd3_flux_files[family]["all_in_one"]
    assert detect.checkpoint_family(str(file)) is FAMILIES[family]
    reference = decoded_pixels(graph_runner, _graph(family, None, None))
    assert max_diff(decoded_pixels(graph_runner, _graph(family, None, None, file)), reference) == 0.0
    # a transformer alone is no checkpoint: the message names the nodes that load it
    alone = _graph(family, None, None, sd3_flux_files[family]["transformer"])
    with pytest.raises(UserError, match=r"not an all-in-one checkpoint.*LoadDiffusionModel"):
        decoded_pixels(graph_runner, alone)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_vae_file_decodes_as_the_folders_vae(graph_runner: Runner, sd3_flux_files, family: str) -> None:
    reference = decoded_pixels(graph_runner, _graph(family, None, None))
    vae = {
        "type": "LoadVAE",
        "file": f'"{sd3_flux_files[family]["vae"]}"',
        "config": f'"builtin:tiny-{family}"',
    }
    graph = txt2img(
        INPUTS,
        flow=True,
        ckpt={"checkpoint": f'"builtin:tiny-{family}"'},
        positive={"text": '"a red circle"'},
        vae=vae,
        decoded={"vae": "!link vae.vae"},
    )
    assert max_diff(decoded_pixels(graph_runner, graph), reference) == 0.0


@pytest.mark.parametrize("latent_format", ["sd3", "flux"])
def test_a_16_channel_vae_file_alone_takes_the_latent_scaling_asked_for(
    tmp_path: Path, latent_format: str
) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from sdflow.models import vae as vae_files
    from sdflow.models.ldm_keys import vae_mapping
    from sdflow.models.ldm_write import to_file

    torch.manual_seed(0)
    blocks = {"block_out_channels": (32, 32), "down_block_types": ("DownEncoderBlock2D",) * 2}
    model = AutoencoderKL(latent_channels=16, up_block_types=("UpDecoderBlock2D",) * 2, **blocks)
    file = tmp_path / "ae.safetensors"
    save_file(to_file(model, vae_mapping(dict(model.config), ""), None), file)
    loaded = vae_files.load(file, CPU, torch.float32, latent_format=latent_format)
    shipped = split_load.read_json(split_load.CONFIGS / latent_format / "vae" / "config.json")
    assert (loaded.config.scaling_factor, loaded.config.shift_factor) == (
        shipped["scaling_factor"],
        shipped["shift_factor"],
    )
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_flux_schnell_file_draws_the_flux_pipelines_schnell_picture(
    graph_runner: Runner, sd3_flux_files
) -> None:
    """Schnell (no guidance embedding, no shift) from its file, described by the dev folder's configs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    files = sd3_flux_files["flux"]
    folder = files["folder"]
    dev = FluxTransformer2DModel.from_pretrained(folder, subfolder="transformer")
    schnell = FluxTransformer2DModel.from_config({**dev.config, "guidance_embeds": False})
    weights = {k: v for k, v in dev.state_dict().items() if not k.startswith("time_text_embed.guidance")}
    schnell.load_state_dict(weights, strict=True)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        split_load.scheduler_config(FAMILIES["flux"], None, "schnell")
    )
    assert not scheduler.config.use_dynamic_shifting and scheduler.config.shift == 1.0
    pipe = FluxPipeline.from_pretrained(folder, transformer=schnell, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    graph = _graph("flux", {"file": f'"{files["schnell"]}"'}, None)
    ours = decoded_pixels(graph_runner, graph, {"seed": 4})
    theirs = pipe(
        "a red circle",
        height=64,
        width=64,
        num_inference_steps=INPUTS["steps"],
        generator=torch.Generator().manual_seed(4),
        output_type="np",
    ).images
    assert max_diff(ours, theirs) <= 1 / 255
    dev_picture = decoded_pixels(graph_runner, _graph("flux", {"file": f'"{files["transformer"]}"'}, None))
    assert max_diff(ours, dev_picture) > 0.0  # no guidance embedding, another schedule
