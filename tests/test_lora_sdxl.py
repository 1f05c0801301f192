"""LoadLoRA on SDXL: kohya (LDM UNet names, lora_te1_/lora_te2_) and diffusers/PEFT (unet.,
text_encoder., text_encoder_2.) LoRAs patch the UNet and both text encoders exactly as diffusers'
StableDiffusionXLPipeline load_lora_weights + fuse_lora does, and a LoRA of the other family is
refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from lora_workflows import lora_error, lora_node, lora_txt2img
from references import aligned, pipeline_images

from sdflow.graphs import loads
from sdflow.models import lora, weights
from sdflow.models.ldm_keys import unet_mapping
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
BASE, REFINER, SD15 = BUILTIN / "tiny-sdxl", BUILTIN / "tiny-sdxl-refiner", BUILTIN / "tiny-sd15"
PROMPT, NEGATIVE, SEED, STEPS, CFG, SAMPLER = "a red circle", "blurry", 3, 4, 5.0, "euler"
DRAWING = {
    "prompt": PROMPT,
    "negative": NEGATIVE,
    "sampler": SAMPLER,
    "steps": STEPS,
    "seed": SEED,
    "cfg": CFG,
}
TOLERANCE = 1e-4  # as tests/test_parity_sdxl.py: the graph against diffusers' SDXL pipeline
ENCODERS = ("text_encoder", "text_encoder_2")


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, Path]:
    """Tiny LoRAs written by tools/make_tiny_loras.py: SDXL base in both formats, the refiner (kohya,
    its one encoder as lora_te2_) and SD 1.5 (kohya)."""
    folder = tmp_path_factory.mktemp("sdxl_loras")
    make = tool("make_tiny_loras.py")
    base = StableDiffusionXLPipeline.from_pretrained(str(BASE))
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(str(REFINER))
    sd15 = StableDiffusionPipeline.from_pretrained(str(SD15))
    (folder / "peft").mkdir()
    return {
        "kohya": make.write_kohya(
            folder / "kohya.safetensors", base.unet, base.text_encoder, 4, 0, base.text_encoder_2
        ),
        "peft": make.write_peft(folder / "peft", base.unet, base.text_encoder, 4, 1, base.text_encoder_2),
        "refiner": make.write_kohya(
            folder / "refiner.safetensors", refiner.unet, None, 4, 2, refiner.text_encoder_2
        ),
        "sd15": make.write_kohya(folder / "sd15.safetensors", sd15.unet, sd15.text_encoder, 4, 3),
    }


def workflow(file: str | None, strength_model: float = 1.0, strength_clip: float = 1.0) -> str:
    """txt2img at 64x64 on tiny-sdxl, through a LoadLoRA node unless ``file`` is None."""
    chain = [] if file is None else [(file, strength_model, strength_clip)]
    return lora_txt2img("tiny-sdxl", *chain, drawing=DRAWING)


def fused(pipe, file: Path, unet_scale: float, te_scale: float):
    """``pipe`` after diffusers' load_lora_weights + fuse_lora of ``file`` (the fused weights kept)."""
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(file))
    pipe.fuse_lora(components=["unet"], lora_scale=unet_scale)
    encoders = [name for name in ENCODERS if getattr(pipe, name, None) is not None]
    pipe.fuse_lora(components=encoders, lora_scale=te_scale)
    pipe.unload_lora_weights()
    return pipe


def changed(patched: torch.nn.Module, base: torch.nn.Module, reference: torch.nn.Module) -> int:
    """How many weights ``patched`` changed from ``base``, asserting each equals ``reference``'s
    (diffusers' fused model) bit for bit."""
    ours, theirs, before = patched.state_dict(), reference.state_dict(), base.state_dict()
    assert ours.keys() == theirs.keys()
    for name, value in ours.items():
        assert torch.equal(value, theirs[name]), name
    return sum(not torch.equal(value, before[name]) for name, value in ours.items())


@pytest.mark.parametrize(
    ("kind", "strength_model", "strength_clip", "layers"),
    [("kohya", 0.7, -0.5, (37, 20, 20)), ("peft", 0.8, 1.0, (32, 16, 16))],
)
def test_unet_and_both_text_encoders_equal_diffusers_fused_lora(
    runner: Runner,
    loras: dict[str, Path],
    kind: str,
    strength_model: float,
    strength_clip: float,
    layers: tuple[int, int, int],
) -> None:
    result = runner.run(loads(lora_node("tiny-sdxl", loras[kind], strength_model, strength_clip), "w.yaml"))
    reference = fused(
        StableDiffusionXLPipeline.from_pretrained(str(BASE)), loras[kind], strength_model, strength_clip
    )
    model, clip = result["lora0.model"], result["lora0.clip"]
    base_model, base_clip = result["ckpt.model"], result["ckpt.clip"]
    assert changed(model.unet, base_model.unet, reference.unet) == layers[0]
    assert changed(clip.text_encoder, base_clip.text_encoder, reference.text_encoder) == layers[1]
    assert changed(clip.text_encoder_2, base_clip.text_encoder_2, reference.text_encoder_2) == layers[2]


def test_strength_clip_alone_patches_both_encoders_and_not_the_unet(
    runner: Runner, loras: dict[str, Path]
) -> None:
    result = runner.run(loads(lora_node("tiny-sdxl", loras["kohya"], 0.0, 1.0), "w.yaml"))
    assert result["lora0.model"].unet is result["ckpt.model"].unet
    for name in ENCODERS:
        patched, base = getattr(result["lora0.clip"], name), getattr(result["ckpt.clip"], name)
        assert patched is not base
        assert any(
            not torch.equal(p, b) for p, b in zip(patched.parameters(), base.parameters(), strict=True)
        )


def diffusers_image(file: Path | None = None, strength_model: float = 1.0, strength_clip: float = 1.0):
    pipe = aligned(StableDiffusionXLPipeline.from_pretrained(str(BASE)))
    pipe.set_progress_bar_config(disable=True)
    if file is not None:
        fused(pipe, file, strength_model, strength_clip)
    return pipeline_images(
        pipe,
        pipe.scheduler.config,
        SAMPLER,
        SEED,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=CFG,
    )


def pixels(runner: Runner, text: str) -> np.ndarray:
    return (
        runner.run(loads(text, "w.yaml"), outputs=["decoded"])["decoded.image"]
        .pixels.permute(0, 2, 3, 1)
        .numpy()
    )


@pytest.mark.parametrize(
    ("kind", "strength_model", "strength_clip"), [("kohya", 0.7, -0.5), ("peft", 0.8, 1.0)]
)
def test_an_sdxl_graph_with_a_lora_draws_diffusers_picture(
    runner: Runner, loras: dict[str, Path], kind: str, strength_model: float, strength_clip: float
) -> None:
    ours = pixels(runner, workflow(str(loras[kind]), strength_model, strength_clip))
    theirs = diffusers_image(loras[kind], strength_model, strength_clip)
    assert float(np.abs(ours - theirs).max()) <= TOLERANCE
    plain = pixels(runner, workflow(None))
    assert float(np.abs(ours - plain).max()) > 0.05  # the LoRA really changed the picture


def test_a_refiner_lora_patches_its_one_encoder_as_diffusers_does(
    runner: Runner, loras: dict[str, Path]
) -> None:
    result = runner.run(loads(lora_node("tiny-sdxl-refiner", loras["refiner"], 0.6, 0.9), "w.yaml"))
    reference = fused(
        StableDiffusionXLImg2ImgPipeline.from_pretrained(str(REFINER)), loras["refiner"], 0.6, 0.9
    )
    assert changed(result["lora0.model"].unet, result["ckpt.model"].unet, reference.unet) > 0
    # the refiner's only encoder is diffusers' text_encoder_2, and sdflow's Clip.text_encoder
    assert (
        changed(result["lora0.clip"].text_encoder, result["ckpt.clip"].text_encoder, reference.text_encoder_2)
        == 20
    )


def test_an_sdxl_lora_on_an_sd15_model_is_refused_in_one_line(
    tmp_path: Path, runner: Runner, loras: dict[str, Path]
) -> None:
    message = lora_error(runner, "tiny-sd15", loras["kohya"], tmp_path)
    assert (
        "an SDXL LoRA (it has layers for SDXL's second text encoder): it does not fit this SD 1.x model"
        in message
    )


def test_an_sd15_lora_on_an_sdxl_model_is_refused_in_one_line(
    tmp_path: Path, runner: Runner, loras: dict[str, Path]
) -> None:
    message = lora_error(runner, "tiny-sdxl", loras["sd15"], tmp_path)
    assert "SDXL UNet layer" in message and "(a LoRA for another model family?)" in message


def test_a_base_lora_on_the_refiner_is_refused_in_one_line(
    tmp_path: Path, runner: Runner, loras: dict[str, Path]
) -> None:
    message = lora_error(runner, "tiny-sdxl-refiner", loras["kohya"], tmp_path)
    assert (
        "layers for a first text encoder (lora_te_/lora_te1_/text_encoder.), which this SDXL refiner "
        "model does not have" in message
    )


def test_kohya_sdxl_unet_layers_by_flattened_diffusers_names_patch_the_same_layers(
    loras: dict[str, Path],
) -> None:
    tensors, _ = weights.read_all(loras["kohya"])
    unet = StableDiffusionXLPipeline.from_pretrained(str(BASE)).unet
    to_ldm = unet_mapping(dict(unet.config), prefix="")
    ldm_to_flat = {
        "lora_unet_" + source.key.removesuffix(".weight").replace(".", "_"): "lora_unet_"
        + path.replace(".", "_")
        for path, _ in unet.named_modules()
        if (source := to_ldm(path + ".weight"))
    }
    renamed = {}
    for key, value in tensors.items():
        stem, dot, rest = key.partition(".")
        renamed[ldm_to_flat.get(stem, stem) + dot + rest] = value
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    assert not any(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks")) for k in renamed)
    by_ldm, unmatched = lora.match(lora.parse(tensors).for_target("unet"), unet, "unet")
    by_diffusers, unmatched_too = lora.match(lora.parse(renamed).for_target("unet"), unet, "unet")
    assert unmatched == unmatched_too == []
    assert by_ldm.keys() == by_diffusers.keys() and len(by_ldm) == 37


def test_the_base_encoders_still_give_their_own_hidden_states_after_a_patched_copy_ran(
    runner: Runner, loras: dict[str, Path]
) -> None:
    # transformers 5 hooks a model's layers on its first run to record hidden states (SDXL reads the
    # penultimate ones): the patched copy's hooks must not land on the base's layers, nor the base's
    # on the copy's, or every layer is recorded twice and the wrong states come back
    def positive(run: Runner, file: str | None) -> torch.Tensor:
        return run.run(loads(workflow(file), "w.yaml"), outputs=["positive"])["positive.conditioning"].embeds

    alone = positive(Runner(device="cpu", dtype="fp32"), None)
    positive(runner, str(loras["peft"]))  # the patched copy runs first
    assert torch.equal(positive(runner, None), alone)
