"""unCLIP and SDXL revision: an unCLIP checkpoint's graph equals diffusers' StableUnCLIPImg2ImgPipeline
on a tiny random unCLIP folder, and the same model as an SD 2.1 unCLIP single file (Stability's layout:
label_emb, embedder.model.visual.*, noise_augmentor.*) loads to the folder's weights and draws its
picture; revision follows ComfyUI's math (the pooled embedding replaced by the picture's noised image
embeds x strength) and changes the picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from safetensors.torch import load_file as read
from safetensors.torch import save_file
from workflows import PICTURE_SEED, max_diff, picture_graph, picture_pipeline_call

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.runner import Runner

PNG_LEVEL = 1 / 255
NOISE_SEED = 11


INPUTS = {"picture": "unset", "encoder": "unset", "strength": 1.0, "augmentation": 0.0}


def workflow(
    checkpoint: str,
    vision: str = "ckpt.clip_vision",
    unclip: bool = True,
    zero_text: bool = False,
    config: str = "",
) -> str:
    positive, nodes = "positive", ""
    if vision != "ckpt.clip_vision":
        nodes += "  vision: {type: LoadCLIPVision, file: !input encoder}\n"
    if zero_text:
        nodes += "  zeroed: {type: ConditioningZeroOut, conditioning: !link positive}\n"
        positive = "zeroed"
    if unclip:
        nodes += f"""
  picture: {{type: LoadImage, path: !input picture}}
  encoded: {{type: CLIPVisionEncode, clip_vision: !link {vision}, image: !link picture.image}}
  pictured: {{type: unCLIPConditioning, conditioning: !link {positive}, clip_vision_output: !link encoded,
             strength: !input strength, noise_augmentation: !input augmentation, seed: {NOISE_SEED}}}
"""
        positive = "pictured"
    text = picture_graph(checkpoint, INPUTS, nodes, "ckpt.model", positive)
    loader = f'checkpoint: "{checkpoint}"}}'
    return text.replace(loader, f'checkpoint: "{checkpoint}", config: "{config}"}}') if config else text


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def run(runner: Runner, text: str, node: str = "decoded", **inputs: Any) -> Any:
    return runner.run(loads(text, "unclip.yaml"), inputs=inputs, outputs=[node])


def pixels(runner: Runner, text: str, **inputs: Any) -> np.ndarray:
    return run(runner, text, **inputs)["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("augmentation", [0.0, 0.2])
def test_an_unclip_checkpoint_matches_the_stable_unclip_pipeline(vision_files, runner, augmentation) -> None:
    from diffusers import DDIMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.utils.torch_utils import randn_tensor

    folder = vision_files["unclip"]
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(folder))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    # the pipeline draws the embeds' noise from its generator before the latents: hand it our latents
    latents = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(PICTURE_SEED))
    theirs = picture_pipeline_call(
        pipe,
        NOISE_SEED,
        image=PILImage.open(vision_files["picture"]).convert("RGB"),
        noise_level=round(999 * augmentation),
        latents=latents,
    )
    text = workflow(str(folder))
    ours = pixels(runner, text, picture=str(vision_files["picture"]), augmentation=augmentation)
    assert max_diff(ours, theirs) <= PNG_LEVEL
    other = pixels(runner, text, picture=str(vision_files["other"]), augmentation=augmentation)
    assert max_diff(ours, other) > 0.01  # the picture matters


def test_an_unclip_model_without_a_picture_reads_zero_class_labels(vision_files, runner) -> None:
    folder = str(vision_files["unclip"])
    without = pixels(runner, workflow(folder, unclip=False))
    zero = pixels(runner, workflow(folder), picture=str(vision_files["picture"]), strength=0.0)
    assert np.array_equal(without, zero)


def test_clip_vision_of_a_checkpoint_without_one_is_a_located_error(vision_files, runner) -> None:
    with pytest.raises(UserError) as caught:
        run(runner, workflow("builtin:tiny-sd15"), picture=str(vision_files["picture"]))
    message = str(caught.value)
    assert "encoded" in message and "clip_vision" in message and "unCLIP" in message


def test_unclip_conditioning_on_a_model_that_reads_no_picture_is_a_located_error(
    vision_files, runner
) -> None:
    text = workflow("builtin:tiny-sd15", vision="vision")
    with pytest.raises(UserError) as caught:
        run(runner, text, picture=str(vision_files["picture"]), encoder=str(vision_files["encoder"]))
    message = str(caught.value)
    assert "denoised" in message and "unCLIP" in message and "SDXL" in message


# -- SDXL revision -------------------------------------------------------------------------------


def revision_inputs(vision_files: dict[str, Path], **more: Any) -> dict[str, Any]:
    return {"picture": str(vision_files["picture"]), "encoder": str(vision_files["encoder"]), **more}


def test_revision_replaces_the_pooled_embedding_as_comfyui_does(vision_files, runner) -> None:
    from diffusers import DDPMScheduler

    text = workflow("builtin:tiny-sdxl", vision="vision")
    inputs = revision_inputs(vision_files, strength=0.7, augmentation=0.3)
    result = run(runner, text, "pictured", **inputs)
    conditioning = result["pictured.conditioning"]
    embeds = run(runner, text, "encoded", **inputs)["encoded.clip_vision_output"].image_embeds
    # ComfyUI's sdxl_pooled: unclip_adm(...)[:, :1280] = strength x q_sample(embeds, level, noise)
    level = round(999 * 0.3)
    noise = torch.randn((1, embeds.shape[-1]), generator=torch.Generator().manual_seed(NOISE_SEED))
    schedule = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    alpha = schedule.alphas_cumprod[level]
    expected = 0.7 * (alpha.sqrt() * embeds + (1 - alpha).sqrt() * noise)
    family = conditioning.family
    added = family.added_cond_kwargs([(conditioning, False)], 1, (64, 64), torch.device("cpu"), torch.float32)
    assert torch.allclose(added["text_embeds"], expected, atol=1e-5)
    assert not torch.allclose(added["text_embeds"], conditioning.pooled, atol=1e-3)


def test_revision_changes_the_picture_and_follows_the_picture(vision_files, runner) -> None:
    plain = pixels(runner, workflow("builtin:tiny-sdxl", unclip=False))
    text = workflow("builtin:tiny-sdxl", vision="vision", zero_text=True)
    revised = pixels(runner, text, **revision_inputs(vision_files))
    assert max_diff(revised, plain) > 0.01
    other = pixels(runner, text, **revision_inputs(vision_files, picture=str(vision_files["other"])))
    assert max_diff(revised, other) > 0.001


def test_an_unclip_unet_without_its_image_parts_is_a_located_error(vision_files, runner, tmp_path) -> None:
    import json
    import shutil

    folder = tmp_path / "no_encoder"
    shutil.copytree(vision_files["unclip"], folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["image_encoder"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(UserError) as caught:
        run(runner, workflow(str(folder), unclip=False))
    assert "denoised" in str(caught.value) and "class labels" in str(caught.value)


# -- unCLIP single files (Stability's sd21-unclip-h / -l layout) -----------------------------------


def load_file(path: Path, config: Path | None) -> Any:
    from sdflow.models import checkpoints, resolver
    from sdflow.models.loaded import LoadOptions

    source = resolver.checkpoint(str(path))
    options = LoadOptions(config=config, allow_pickle=path.suffix == ".ckpt")
    return checkpoints.load(source, torch.device("cpu"), torch.float32, options)


def test_an_unclip_ckpt_loads_as_its_safetensors_copy(vision_files, unclip_files, tmp_path) -> None:
    """Stability ships .ckpt pickles (a dict with the state under 'state_dict'): read weights-only."""
    path = tmp_path / "sd21-unclip-tiny.ckpt"
    torch.save({"state_dict": read(unclip_files["full"]), "global_step": 1}, path)
    folder = vision_files["unclip"]
    ours, safe = load_file(path, folder), load_file(unclip_files["full"], folder)
    for mine, other in ((ours.unet, safe.unet), (ours.unclip[0], safe.unclip[0])):
        mine, other = mine.state_dict(), other.state_dict()
        assert mine.keys() == other.keys() and all(torch.equal(mine[k], other[k]) for k in mine)
    assert torch.equal(ours.unclip[2].mean, safe.unclip[2].mean)


def test_an_unclip_file_loads_the_folders_weights(vision_files, unclip_files) -> None:
    folder = vision_files["unclip"]
    ours, theirs = load_file(unclip_files["full"], folder), load_file(folder, None)
    pairs = [(getattr(ours, name), getattr(theirs, name)) for name in ("unet", "vae", "text_encoder")]
    pairs.append((ours.unclip[0], theirs.unclip[0]))  # the image encoder
    for mine, other in pairs:
        mine, other = mine.state_dict(), other.state_dict()
        assert mine.keys() == other.keys()
        assert all(torch.equal(mine[k], other[k]) for k in mine)
    assert ours.unet.config.class_embed_type == "projection"
    # diffusers' own converter reads the file's label_emb as the class embedding too
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    converted = convert_ldm_unet_checkpoint(read(unclip_files["full"]), dict(theirs.unet.config))
    unet = ours.unet.state_dict()
    assert converted.keys() == unet.keys() and all(torch.equal(converted[k], unet[k]) for k in unet)
    assert ours.unclip[1] == theirs.unclip[1]  # the preprocessing
    noising, reference = ours.unclip[2], theirs.unclip[2]
    assert torch.equal(noising.mean, reference.mean) and torch.equal(noising.std, reference.std)
    assert torch.equal(noising.scheduler.alphas_cumprod, reference.scheduler.alphas_cumprod)


@pytest.mark.parametrize("augmentation", [0.0, 0.2])
def test_an_unclip_file_draws_the_folders_picture(vision_files, unclip_files, runner, augmentation) -> None:
    from diffusers import DDIMScheduler, StableUnCLIPImg2ImgPipeline
    from diffusers.utils.torch_utils import randn_tensor

    folder = vision_files["unclip"]
    inputs = {"picture": str(vision_files["picture"]), "augmentation": augmentation}
    ours = pixels(runner, workflow(str(unclip_files["full"]), config=str(folder)), **inputs)
    assert max_diff(ours, pixels(runner, workflow(str(folder)), **inputs)) <= PNG_LEVEL
    pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(folder))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    latents = randn_tensor((1, 4, 8, 8), generator=torch.Generator().manual_seed(PICTURE_SEED))
    picture = PILImage.open(vision_files["picture"]).convert("RGB")
    noise_level = round(999 * augmentation)
    theirs = picture_pipeline_call(pipe, NOISE_SEED, image=picture, noise_level=noise_level, latents=latents)
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_an_unclip_file_without_its_stats_normalises_as_comfyui(vision_files, unclip_files) -> None:
    """Stability's files keep no data_mean / data_std (non-persistent buffers): mean 0, std 1; the
    schedule is still the file's."""
    folder = vision_files["unclip"]
    noising = load_file(unclip_files["bare"], folder).unclip[2]
    reference = load_file(folder, None).unclip[2]
    assert torch.equal(noising.mean, torch.zeros_like(reference.mean))
    assert torch.equal(noising.std, torch.ones_like(reference.std))
    assert not torch.equal(reference.mean, noising.mean)  # the tiny folder's normaliser is random
    assert torch.equal(noising.scheduler.alphas_cumprod, reference.scheduler.alphas_cumprod)


def test_an_unclip_file_without_a_schedule_takes_comfyuis(vision_files, unclip_files, tmp_path) -> None:
    import shutil

    from diffusers import DDPMScheduler

    state = {k: v for k, v in read(unclip_files["bare"]).items() if not k.startswith("noise_augmentor.")}
    save_file(state, tmp_path / "unclip.safetensors")
    config = tmp_path / "config"  # the tiny architecture, without an image_noising_scheduler
    shutil.copytree(vision_files["unclip"], config, ignore=shutil.ignore_patterns("image_noising_scheduler"))
    noising = load_file(tmp_path / "unclip.safetensors", config).unclip[2]
    expected = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    assert torch.equal(noising.scheduler.alphas_cumprod, expected)


def test_an_unclip_file_without_its_encoder_reads_another_ones_embeds(
    vision_files, unclip_files, runner
) -> None:
    """A file without embedder.*: LoadCheckpoint's clip_vision is a located error, and LoadCLIPVision's
    encoder (the same weights here) draws what the full file draws."""
    folder, inputs = str(vision_files["unclip"]), {"picture": str(vision_files["picture"])}
    bare = str(unclip_files["no-encoder"])
    with pytest.raises(UserError) as caught:
        run(runner, workflow(bare, config=folder), **inputs)
    message = str(caught.value)
    assert "encoded" in message and "embedder.model.visual" in message and "LoadCLIPVision" in message
    inputs |= {"encoder": str(vision_files["unclip"] / "image_encoder"), "augmentation": 0.2}
    separate = pixels(runner, workflow(bare, vision="vision", config=folder), **inputs)
    full = pixels(runner, workflow(str(unclip_files["full"]), config=folder), **inputs)
    assert max_diff(separate, full) <= PNG_LEVEL


def _real_shapes(width: int, layers: int, embeds: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of an sd21-unclip file's header as Stability's files have them (the UNet's
    first conv and class embedding, the OpenCLIP text encoder's marker, the image tower and the noise
    augmentor), written out independently of sdflow's key tables."""
    visual = "embedder.model.visual."
    shapes = {
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2 * embeds),
        "model.diffusion_model.label_emb.0.0.bias": (1280,),
        "model.diffusion_model.label_emb.0.2.weight": (1280, 1280),
        "model.diffusion_model.label_emb.0.2.bias": (1280,),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "noise_augmentor.betas": (1000,),
        "noise_augmentor.alphas_cumprod": (1000,),
        visual + "conv1.weight": (width, 3, 14, 14),
        visual + "class_embedding": (width,),
        visual + "positional_embedding": (257, width),
        visual + "proj": (width, embeds),
    }
    for norm in ("ln_pre", "ln_post"):
        shapes |= {f"{visual}{norm}.weight": (width,), f"{visual}{norm}.bias": (width,)}
    for i in range(layers):
        block = f"{visual}transformer.resblocks.{i}."
        shapes |= {
            block + "attn.in_proj_weight": (3 * width, width),
            block + "attn.in_proj_bias": (3 * width,),
            block + "attn.out_proj.weight": (width, width),
            block + "attn.out_proj.bias": (width,),
            block + "mlp.c_fc.weight": (4 * width, width),
            block + "mlp.c_fc.bias": (4 * width,),
            block + "mlp.c_proj.weight": (width, 4 * width),
            block + "mlp.c_proj.bias": (width,),
        }
        for norm in ("ln_1", "ln_2"):
            shapes |= {f"{block}{norm}.weight": (width,), f"{block}{norm}.bias": (width,)}
    return shapes


@pytest.mark.parametrize(
    ("variant", "width", "layers", "embeds"), [("H", 1280, 32, 1024), ("L", 1024, 24, 768)]
)
def test_stabilitys_unclip_files_are_detected_and_fit_the_shipped_configs(variant, width, layers, embeds):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from sdflow.models import module_fill, singlefile, unclip_file
    from sdflow.models.detect import detect
    from sdflow.models.ldm_keys import openclip_vision_mapping, unet_mapping

    shapes = _real_shapes(width, layers, embeds)
    found = detect(shapes)
    assert found.label() == f"SD 2.x unCLIP-{variant}" and found.unclip.problem is None
    folder = unclip_file.SHIPPED / f"image_encoder_{variant.lower()}"
    config = CLIPVisionConfig.from_dict(module_fill.read_json(folder / "config.json"))
    encoder = module_fill.build_empty(CLIPVisionModelWithProjection, config)
    plan = module_fill.plan_weights(
        encoder, openclip_vision_mapping("embedder.model.visual."), shapes, "encoder"
    )
    assert len(plan) == len(encoder.state_dict())  # every weight found, of its shape
    assert config.hidden_act == ("gelu" if variant == "H" else "quick_gelu")  # OpenCLIP's vs OpenAI's
    unet_config = module_fill.read_json(singlefile.CONFIGS / "sd2" / "unet" / "config.json")
    unet_config |= {"class_embed_type": "projection", "projection_class_embeddings_input_dim": 2 * embeds}
    unet = module_fill.build_empty(UNet2DConditionModel.from_config, unet_config)
    mapping = unet_mapping(unet_config)
    for name, tensor in unet.class_embedding.state_dict().items():
        source = mapping("class_embedding." + name)
        assert shapes[source.key] == tuple(tensor.shape)


def test_a_header_without_the_encoder_still_tells_the_variant() -> None:
    from sdflow.models.detect import detect

    shapes = {k: v for k, v in _real_shapes(1280, 32, 1024).items() if not k.startswith("embedder.")}
    assert detect(shapes).label() == "SD 2.x unCLIP-H without its image encoder"


def _broken(state: dict[str, torch.Tensor], damage: str) -> dict[str, torch.Tensor]:
    visual = "embedder.model.visual."
    if damage == "a missing layer norm":
        return {k: v for k, v in state.items() if k != visual + "transformer.resblocks.1.ln_1.weight"}
    if damage == "no conv1":
        return {k: v for k, v in state.items() if k != visual + "conv1.weight"}
    if damage == "other embeds":
        return {**state, visual + "proj": torch.zeros(state[visual + "proj"].shape[0], 40)}
    assert damage == "a short schedule"
    return {**state, "noise_augmentor.betas": state["noise_augmentor.betas"][:500]}


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("a missing layer norm", "embedder.model.visual.transformer.resblocks.1.ln_1.weight"),
        ("no conv1", "no embedder.model.visual.conv1.weight"),
        ("other embeds", "40-wide image embeds"),
        ("a short schedule", "noise_augmentor.betas is [500]"),
    ],
)
def test_a_broken_unclip_file_is_a_located_error(
    vision_files, unclip_files, runner, tmp_path, damage, expected
) -> None:
    path = tmp_path / "broken.safetensors"
    save_file(_broken(read(unclip_files["full"]), damage), path)
    text = workflow(str(path), config=str(vision_files["unclip"]))
    with pytest.raises(UserError) as caught:
        run(runner, text, picture=str(vision_files["picture"]))
    message = str(caught.value)
    assert "ckpt" in message and "checkpoint" in message and expected in message


def test_sdflow_models_lists_unclip_files_and_folders(
    vision_files, unclip_files, model_folders, capsys
) -> None:
    import shutil

    from sdflow.cli import main

    model_folders("ComfyUI/models/checkpoints/sd21-unclip-tiny.safetensors", unclip_files["full"])
    bare = model_folders("ComfyUI/models/checkpoints/unclip-vision.safetensors", unclip_files["no-encoder"])
    shutil.copytree(vision_files["unclip"], bare.parent / "unclip-folder")
    assert main(["models", "checkpoints"]) == 0
    lines = [line.split(maxsplit=1) for line in capsys.readouterr().out.splitlines()]
    listed = {line[0]: line[1].strip() for line in lines if len(line) == 2}
    assert listed["sd21-unclip-tiny.safetensors"] == "SD 2.x unCLIP (48-wide image embeds)"
    assert (
        listed["unclip-vision.safetensors"]
        == "SD 2.x unCLIP (48-wide image embeds) without its image encoder"
    )
    assert listed["unclip-folder"] == "diffusers folder, SD 2.x unCLIP"


def test_checkpoint_save_writes_an_unclip_model_in_stabilitys_layout(vision_files, tmp_path) -> None:
    from sdflow.models.detect import inspect

    folder = vision_files["unclip"]
    text = f"""
version: 1
nodes:
  a: {{type: LoadCheckpoint, checkpoint: "{folder}"}}
  save: {{type: CheckpointSave, model: !link a.model, clip: !link a.clip, vae: !link a.vae,
         clip_vision: !link a.clip_vision, filename_prefix: unclip/saved}}
"""
    saver = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    path = Path(saver.run(loads(text, "save.yaml"), outputs=["save"])["save.files"].paths[0])
    assert inspect(path).label() == "SD 2.x unCLIP (48-wide image embeds)"
    saved, reference = load_file(path, folder), load_file(folder, None)
    for mine, other in ((saved.unet, reference.unet), (saved.unclip[0], reference.unclip[0])):
        mine, other = mine.state_dict(), other.state_dict()
        assert mine.keys() == other.keys() and all(torch.equal(mine[k], other[k]) for k in mine)
    for part in ("mean", "std"):
        assert torch.equal(getattr(saved.unclip[2], part), getattr(reference.unclip[2], part))
    assert torch.equal(saved.unclip[2].scheduler.alphas_cumprod, reference.unclip[2].scheduler.alphas_cumprod)
