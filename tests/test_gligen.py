"""GLIGEN: LoadGLIGEN reads ComfyUI's and diffusers' layouts, GLIGENTextBoxApply's boxes draw what
diffusers' StableDiffusionGLIGENPipeline draws with the same weights, phrases and boxes, and GLIGENs
that do not fit are located errors. The tiny GLIGEN is made here: the tiny SD 1.5 UNet rebuilt with
attention_type "gated", its fuser and position-net weights randomised and saved in ComfyUI's layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from references import aligned
from safetensors.torch import save_file
from workflows import comfy_converted, max_diff, picture_graph, picture_pipeline_call, spec_of_type

from sdflow.errors import UserError
from sdflow.formats.comfy_json import read
from sdflow.graphs import loads
from sdflow.interop.comfy import convert
from sdflow.models import gligen
from sdflow.models.ldm_keys import unet_mapping
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sdflow" / "builtin" / "tiny-sd15"
PNG_LEVEL = 1 / 255
# (phrase, x, y, width, height) in pixels of the 64x64 picture
BOXES = [("a red circle", 8, 16, 32, 24), ("a green square", 40, 0, 24, 48)]


def gated_unet(seed: int = 0, **config_changes: Any) -> Any:
    """The tiny SD 1.5 UNet with a gated layer in every transformer block: its own weights, random
    fusers (their gates opened) and a random position net."""
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(str(TINY / "unet"))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config({**base.config, "attention_type": "gated", **config_changes})
    if not config_changes:
        missing, unexpected = unet.load_state_dict(base.state_dict(), strict=False)
        assert not unexpected and all(".fuser." in k or k.startswith("position_net.") for k in missing)
    with torch.no_grad():
        for name, parameter in unet.named_parameters():
            if name.endswith(("alpha_attn", "alpha_dense")):
                parameter.fill_(0.8)
            elif name.startswith("position_net.null_"):
                parameter.normal_()
        # the boxes' Fourier features weigh like the phrases (random weights barely tell them apart)
        unet.position_net.linears[0].weight[:, unet.position_net.positive_len :] *= 8
    return unet.eval()


def grounding_state(unet: Any) -> dict[str, torch.Tensor]:
    """The fuser and position-net tensors of a gated UNet in ComfyUI's layout (LDM block names)."""
    mapping = unet_mapping(dict(unet.config), prefix="")
    state = {}
    for name, tensor in unet.state_dict().items():
        if ".fuser." in name:
            state[mapping(name).key] = tensor.contiguous()
        elif name.startswith("position_net."):
            state[name] = tensor.contiguous()
    return state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gligen")
    unet = gated_unet()
    unet.save_pretrained(out / "gated_unet")
    state = grounding_state(unet)
    save_file(state, out / "gligen_tiny_textbox.safetensors")
    found = {"comfy": out / "gligen_tiny_textbox.safetensors", "unet": out / "gated_unet"}
    found["diffusers"] = out / "gated_unet" / "diffusion_pytorch_model.safetensors"
    wide = {k: v for k, v in state.items()}  # phrases 1024 wide: an SD 2.x GLIGEN
    wide["position_net.null_positive_feature"] = torch.zeros(1024)
    wide["position_net.linears.0.weight"] = torch.zeros(512, 1024 + 64)
    save_file(wide, out / "gligen_sd2_like.safetensors")
    found["sd2"] = out / "gligen_sd2_like.safetensors"
    bigger = grounding_state(gated_unet(block_out_channels=[64, 64]))
    save_file(bigger, out / "gligen_other_size.safetensors")
    found["other_size"] = out / "gligen_other_size.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 4)}, out / "not_gligen.safetensors")
    found["not_gligen"] = out / "not_gligen.safetensors"
    return found


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def boxes_nodes(boxes: list[tuple[str, int, int, int, int]], extra: str = "") -> str:
    lines = ["  gligen: {type: LoadGLIGEN, file: !input gligen}"]
    source = "positive"
    for number, (phrase, x, y, w, h) in enumerate(boxes):
        lines.append(
            f"  box{number}: {{type: GLIGENTextBoxApply, conditioning: !link {source}, "
            f'clip: !link ckpt.clip, gligen: !link gligen, text: "{phrase}", x: {x}, y: {y}, width: {w}, '
            f"height: {h}{extra}}}"
        )
        source = f"box{number}"
    return "\n".join(lines) + "\n", source


def workflow(boxes: list = BOXES, extra: str = "") -> str:
    nodes, positive = boxes_nodes(boxes, extra) if boxes else ("", "positive")
    return picture_graph("builtin:tiny-sd15", {"gligen": "unset"}, nodes, "ckpt.model", positive)


def pixels(runner: Runner, text: str, **inputs: Any) -> np.ndarray:
    result = runner.run(loads(text, "gligen.yaml"), inputs=inputs, outputs=["decoded"])
    return result["decoded.image"].pixels.permute(0, 2, 3, 1).numpy()


def plain_negative(unet: Any) -> None:
    """``unet`` called as ComfyUI calls it for a negative without GLIGEN: the CFG batch's first half
    (the negative) without the gated layers' inputs, the second with them."""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    forward = unet.forward

    def split(sample, t, encoder_hidden_states, cross_attention_kwargs=None, **kwargs):
        half = sample.shape[0] // 2
        grounding = {k: v[half:] for k, v in cross_attention_kwargs["gligen"].items()}
        negative = forward(sample[:half], t, encoder_hidden_states[:half], **kwargs).sample
        positive = forward(
            sample[half:],
            t,
            encoder_hidden_states[half:],
            cross_attention_kwargs={"gligen": grounding},
            **kwargs,
        ).sample
        return UNet2DConditionOutput(sample=torch.cat([negative, positive]))

    unet.forward = split


def reference(files: dict[str, Path], boxes: list, beta: float, plain: bool = False) -> np.ndarray:
    """StableDiffusionGLIGENPipeline on the tiny SD 1.5 with the gated UNet (boxes in 0..1); ``plain``:
    its negative drawn without the gated layers (``plain_negative``)."""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionGLIGENPipeline,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    base = StableDiffusionPipeline.from_pretrained(str(TINY), safety_checker=None)
    unet = UNet2DConditionModel.from_pretrained(str(files["unet"]))
    if plain:
        plain_negative(unet)
    pipe = StableDiffusionGLIGENPipeline(
        vae=base.vae,
        text_encoder=base.text_encoder,
        tokenizer=base.tokenizer,
        unet=unet,
        scheduler=DDIMScheduler.from_config(base.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    aligned(pipe)
    return picture_pipeline_call(
        pipe,
        gligen_phrases=[b[0] for b in boxes],
        gligen_boxes=[[x / 64, y / 64, (x + w) / 64, (y + h) / 64] for _, x, y, w, h in boxes],
        gligen_scheduled_sampling_beta=beta,
    )


# -- loading -------------------------------------------------------------------------------------


def test_both_layouts_load_to_the_same_tensors(files) -> None:
    cpu = torch.device("cpu")
    comfy = gligen.load(files["comfy"], cpu, torch.float32)
    diffusers = gligen.load(files["diffusers"], cpu, torch.float32)
    assert (comfy.layout, diffusers.layout) == ("ldm", "diffusers")
    assert len(comfy.fusers) == len(diffusers.fusers) == 4  # down 1, mid 1, up 2 transformer blocks
    assert "input_blocks.1.1.transformer_blocks.0" in comfy.fusers
    assert "down_blocks.0.attentions.0.transformer_blocks.0" in diffusers.fusers
    a, b = (
        comfy.fusers["output_blocks.3.1.transformer_blocks.0"],
        diffusers.fusers["up_blocks.1.attentions.1.transformer_blocks.0"],
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (comfy.phrase_width, comfy.object_width) == (32, 32)
    assert gligen.describe(files["sd2"]).endswith("phrases 1024 wide (SD 2.x)")


# -- against diffusers ---------------------------------------------------------------------------


def test_boxes_match_the_gligen_pipeline(files, runner: Runner) -> None:
    theirs = reference(files, BOXES, beta=0.5)
    extra = ", scheduled_sampling_beta: 0.5, unboxed: empty"
    ours = pixels(runner, workflow(extra=extra), gligen=str(files["comfy"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL
    plain = pixels(runner, workflow(boxes=[]))
    assert max_diff(ours, plain) > 0.02  # the boxes matter
    moved = [(p, 64 - w - x, y, w, h) for p, x, y, w, h in BOXES]  # mirrored boxes
    elsewhere = pixels(runner, workflow(moved, extra), gligen=str(files["comfy"]))
    assert max_diff(ours, elsewhere) > PNG_LEVEL  # and where they are, beyond the parity tolerance


def test_the_diffusers_layout_draws_what_comfys_layout_draws(files, runner: Runner) -> None:
    comfy = pixels(runner, workflow(), gligen=str(files["comfy"]))
    diffusers = pixels(runner, workflow(), gligen=str(files["diffusers"]))
    assert np.array_equal(comfy, diffusers)


def test_every_step_grounded_matches_the_pipeline_at_beta_one(files, runner: Runner) -> None:
    theirs = reference(files, BOXES[:1], beta=1.0)
    ours = pixels(runner, workflow(BOXES[:1], ", unboxed: empty"), gligen=str(files["comfy"]))
    assert max_diff(ours, theirs) <= PNG_LEVEL


def test_comfys_defaults_draw_the_negative_without_the_gated_layers(files, runner: Runner) -> None:
    plain = pixels(runner, workflow(), gligen=str(files["comfy"]))
    assert max_diff(plain, reference(files, BOXES, beta=1.0, plain=True)) <= PNG_LEVEL
    empty = pixels(runner, workflow(extra=", unboxed: empty"), gligen=str(files["comfy"]))
    assert max_diff(plain, empty) > 0.005  # unlike the pipeline's own negative


def test_beta_zero_draws_the_ungrounded_picture(files, runner: Runner) -> None:
    none = pixels(runner, workflow(extra=", scheduled_sampling_beta: 0.0"), gligen=str(files["comfy"]))
    assert np.array_equal(none, pixels(runner, workflow(boxes=[])))


# -- mistakes ------------------------------------------------------------------------------------


def test_a_gligen_of_another_family_is_a_located_error(files, runner: Runner) -> None:
    with pytest.raises(UserError) as caught:
        runner.run(loads(workflow(), "gligen.yaml"), inputs={"gligen": str(files["sd2"])})
    message = str(caught.value)
    assert "box0" in message and "SD 2.x" in message and "gligen" in message


def test_a_gligen_of_another_size_is_a_located_error(files, runner: Runner) -> None:
    with pytest.raises(UserError) as caught:
        runner.run(loads(workflow(), "gligen.yaml"), inputs={"gligen": str(files["other_size"])})
    message = str(caught.value)
    assert "denoised" in message and "positive" in message and "another shape" in message


def test_a_file_that_is_no_gligen_is_a_located_error(files, runner: Runner) -> None:
    with pytest.raises(UserError) as caught:
        runner.run(loads(workflow(), "gligen.yaml"), inputs={"gligen": str(files["not_gligen"])})
    message = str(caught.value)
    assert "'gligen'" in message and "file" in message and "not a GLIGEN" in message


# -- importing ComfyUI workflows -----------------------------------------------------------------


def comfy_graph(files: dict[str, Path], boxes: bool = True) -> dict:
    def node(kind: str, **inputs: Any) -> dict:
        return {"class_type": kind, "inputs": inputs}

    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name=str(TINY)),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle and a green square"),
        "3": node("CLIPTextEncode", clip=["1", 1], text="blurry"),
        "4": node("GLIGENLoader", gligen_name=str(files["comfy"])),
        "5": node(
            "GLIGENTextBoxApply", conditioning_to=["2", 0], clip=["1", 1], gligen_textbox_model=["4", 0],
            text="a red circle", width=32, height=24, x=8, y=16,
        ),
        "6": node(
            "GLIGENTextBoxApply", conditioning_to=["5", 0], clip=["1", 1], gligen_textbox_model=["4", 0],
            text="a green square", width=27, height=48, x=40, y=0,
        ),
        "7": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "8": node(
            "KSampler", model=["1", 0], positive=["6", 0] if boxes else ["2", 0], negative=["3", 0],
            latent_image=["7", 0], seed=5, steps=4, cfg=5.0, sampler_name="ddim", scheduler="normal",
            denoise=1.0,
        ),
        "9": node("VAEDecode", samples=["8", 0], vae=["1", 2]),
    }  # fmt: skip
    if not boxes:
        del graph["4"], graph["5"], graph["6"]
    return graph


def test_comfy_gligen_nodes_import_with_their_boxes_and_run(files, runner: Runner) -> None:
    conversion, text = comfy_converted(comfy_graph(files))
    assert spec_of_type(conversion.workflow, "LoadGLIGEN").fields["file"] == str(files["comfy"])
    first, second = sorted(
        (s for s in conversion.workflow.nodes.values() if s.type == "GLIGENTextBoxApply"), key=lambda s: s.id
    )
    assert (first.fields["text"], first.fields["x"], first.fields["y"]) == ("a red circle", 8, 16)
    assert (first.fields["width"], first.fields["height"]) == (32, 24)
    assert second.fields["conditioning"].node == first.id and second.fields["width"] == 24  # 27 // 8 * 8
    assert any("width 27 drawn as 24" in n for n in conversion.notes)
    _, plain = comfy_converted(comfy_graph(files, boxes=False))

    def drawn(yaml: str) -> np.ndarray:
        return runner.run(loads(yaml, "c.yaml"), outputs=["decode_9"])["decode_9.image"].pixels.numpy()

    assert max_diff(drawn(text), drawn(plain)) > 0.02  # imported, the boxes act


def test_ui_format_gligen_nodes_name_their_widgets(files, tmp_path: Path) -> None:
    def ui(node_id: int, kind: str, widgets: list, inputs: dict[str, int]) -> dict:
        return {"id": node_id, "type": kind, "inputs": [{"name": k, "link": v} for k, v in inputs.items()],
                "outputs": [], "widgets_values": widgets}  # fmt: skip

    document = {
        "nodes": [
            ui(1, "CheckpointLoaderSimple", [str(TINY)], {}),
            ui(2, "CLIPTextEncode", ["a red circle"], {"clip": 1}),
            ui(3, "GLIGENLoader", [str(files["comfy"])], {}),
            ui(4, "GLIGENTextBoxApply", ["a red circle", 16, 40, 8, 24],
               {"conditioning_to": 2, "clip": 3, "gligen_textbox_model": 4}),
        ],
        "links": [[1, 1, 1, 2, 0, "*"], [2, 2, 0, 4, 0, "*"], [3, 1, 1, 4, 1, "*"], [4, 3, 0, 4, 2, "*"]],
    }  # fmt: skip
    path = tmp_path / "gligen_ui.json"
    path.write_text(json.dumps(document))
    box = spec_of_type(convert(read(path), str(path)).workflow, "GLIGENTextBoxApply").fields
    assert [box[k] for k in ("text", "width", "height", "x", "y")] == ["a red circle", 16, 40, 8, 24]
