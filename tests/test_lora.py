"""LoadLoRA: both file formats match diffusers' load_lora_weights + fuse_lora, stack, and never leak
into the cached base model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from lora_workflows import lora_txt2img
from references import aligned, pipeline_images
from safetensors.torch import save_file

from sdflow.cli import main
from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.models import lora, weights
from sdflow.models.ldm_keys import unet_mapping
from sdflow.nodes.types import storages
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "sdflow" / "builtin" / "tiny-sd15"
TO_Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
PROMPT, NEGATIVE, SEED, STEPS, CFG = "a red circle", "blurry", 3, 4, 5.0
REFERENCE = {
    "prompt": PROMPT,
    "negative_prompt": NEGATIVE,
    "height": 64,
    "width": 64,
    "num_inference_steps": STEPS,
    "guidance_scale": CFG,
}
DRAWING = {
    "prompt": PROMPT,
    "negative": NEGATIVE,
    "sampler": "ddim",
    "steps": STEPS,
    "seed": SEED,
    "cfg": CFG,
}


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, Path]:
    """Tiny LoRAs for tiny-sd15, one per format, written by tools/make_tiny_loras.py."""
    folder = tmp_path_factory.mktemp("loras")
    pipe = StableDiffusionPipeline.from_pretrained(str(CHECKPOINT))
    tool = tool("make_tiny_loras.py")
    return {
        "kohya": tool.write_kohya(folder / "tiny_kohya.safetensors", pipe.unet, pipe.text_encoder, 4, 0),
        "peft": tool.write_peft(folder / "peft", pipe.unet, pipe.text_encoder, 4, 1),
    }


def workflow(*chain: tuple[str, float, float], plain_branch: bool = False) -> str:
    """txt2img on tiny-sd15 through LoadLoRA nodes (file, strength_model, strength_clip) in a chain;
    with ``plain_branch`` a second branch renders from the checkpoint directly."""
    return lora_txt2img("tiny-sd15", *chain, drawing=DRAWING, plain_branch=plain_branch)


def pixels(result, node: str = "decoded") -> np.ndarray:
    return result[f"{node}.image"].pixels.permute(0, 2, 3, 1).numpy()


def diffusers_image(*fused: tuple[Path, float, float]) -> np.ndarray:
    """diffusers' txt2img after load_lora_weights + fuse_lora of each (file, unet scale, te scale)."""
    pipe = aligned(StableDiffusionPipeline.from_pretrained(str(CHECKPOINT)))
    pipe.set_progress_bar_config(disable=True)
    for file, unet_scale, te_scale in fused:
        pipe.load_lora_weights(str(file))
        pipe.fuse_lora(components=["unet"], lora_scale=unet_scale)
        pipe.fuse_lora(components=["text_encoder"], lora_scale=te_scale)
        pipe.unload_lora_weights()  # keeps the fused weights
    return pipeline_images(pipe, pipe.scheduler.config, "ddim", SEED, **REFERENCE)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


@pytest.mark.parametrize(
    ("kind", "strength_model", "strength_clip"), [("kohya", 0.7, -0.5), ("peft", 0.8, 1.0)]
)
def test_lora_matches_diffusers_fused_lora(
    runner: Runner, loras: dict[str, Path], kind: str, strength_model: float, strength_clip: float
) -> None:
    ours = pixels(runner.run(loads(workflow((str(loras[kind]), strength_model, strength_clip)), "w.yaml")))
    theirs = diffusers_image((loras[kind], strength_model, strength_clip))
    assert max_diff(ours, theirs) <= 1e-5
    assert max_diff(ours, diffusers_image()) > 0.05  # the LoRA really changed the picture


def test_text_encoder_strength_alone_changes_the_picture(runner: Runner, loras: dict[str, Path]) -> None:
    clip_only = pixels(runner.run(loads(workflow((str(loras["kohya"]), 0.0, 1.0)), "w.yaml")))
    assert max_diff(clip_only, diffusers_image((loras["kohya"], 0.0, 1.0))) <= 1e-5
    assert max_diff(clip_only, diffusers_image()) > 0.05


def test_two_branches_with_and_without_the_lora_are_both_right(
    tmp_path: Path, loras: dict[str, Path]
) -> None:
    runner = Runner(device="cpu", dtype="fp32")
    both = runner.run(loads(workflow((str(loras["kohya"]), 1.0, 1.0), plain_branch=True), "w.yaml"))
    plain_alone = Runner(device="cpu", dtype="fp32").run(loads(workflow(), "w.yaml"))
    assert np.array_equal(pixels(both, "plain_decoded"), pixels(plain_alone))  # bit for bit
    assert max_diff(pixels(both), diffusers_image((loras["kohya"], 1.0, 1.0))) <= 1e-5
    # and the base model cached by the runner still renders the plain picture in a later run
    again = runner.run(loads(workflow(), "w.yaml"))
    assert np.array_equal(pixels(again), pixels(plain_alone))
    assert again.report.status()["ckpt"] == "cached"


def test_two_loras_stack_as_diffusers_fusing_both(runner: Runner, loras: dict[str, Path]) -> None:
    chain = ((str(loras["kohya"]), 0.6, 0.4), (str(loras["peft"]), 0.5, 0.8))
    ours = pixels(runner.run(loads(workflow(*chain), "w.yaml")))
    theirs = diffusers_image((loras["kohya"], 0.6, 0.4), (loras["peft"], 0.5, 0.8))
    assert max_diff(ours, theirs) <= 1e-5


def test_patched_model_shares_every_unpatched_tensor_and_leaves_the_base_alone(
    runner: Runner, loras: dict[str, Path]
) -> None:
    result = runner.run(loads(workflow((str(loras["peft"]), 1.0, 1.0)), "w.yaml"), outputs=["lora0"])
    base, patched = result["ckpt.model"].unet, result["lora0.model"].unet
    fresh = StableDiffusionPipeline.from_pretrained(str(CHECKPOINT)).unet
    for name, value in fresh.state_dict().items():
        assert torch.equal(base.state_dict()[name], value), name  # the cached base is untouched
    base_params, patched_params = dict(base.named_parameters()), dict(patched.named_parameters())
    changed = [n for n, p in patched_params.items() if p is not base_params[n]]
    assert changed and all(
        n.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")) for n in changed
    )
    assert len(changed) == len(lora.parse(*weights.read_all(loras["peft"])).for_target("unet"))


def test_the_model_cache_counts_a_patched_model_by_its_patched_weights_only(loras: dict[str, Path]) -> None:
    runner = Runner(device="cpu", dtype="fp32")
    result = runner.run(loads(workflow((str(loras["peft"]), 1.0, 1.0)), "w.yaml"), outputs=["lora0"])
    base = sum(storages(result.outputs["ckpt"].values()).values())
    patched = result["lora0.model"].unet, result["lora0.clip"].text_encoder
    shared = {
        id(p)
        for p in (*result["ckpt.model"].unet.parameters(), *result["ckpt.clip"].text_encoder.parameters())
    }
    added = sum(p.nbytes for module in patched for p in module.parameters() if id(p) not in shared)
    assert 0 < added < base / 4
    assert runner.models.used == base + added
    runner.models.clear()
    assert runner.models.used == 0


def test_cache_key_follows_the_lora_file_content_and_the_strengths(
    tmp_path: Path, runner: Runner, loras: dict[str, Path]
) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(loras["kohya"].read_bytes())

    def key(strength: float = 1.0) -> str:
        return runner.keys(loads(workflow((str(copy), strength, 1.0)), "w.yaml"))["lora0"]

    first = key()
    assert key() == first
    assert key(0.5) != first
    copy.write_bytes(loras["peft"].read_bytes())
    assert key() != first


def test_a_diffusers_lora_folder_reads_its_one_weights_file(runner: Runner, loras: dict[str, Path]) -> None:
    folder = runner.run(loads(workflow((str(loras["peft"].parent), 1.0, 1.0)), "w.yaml"), outputs=["lora0"])
    direct = runner.run(loads(workflow((str(loras["peft"]), 1.0, 1.0)), "w.yaml"), outputs=["lora0"])
    from_folder, from_file = folder["lora0.model"].unet.state_dict(), direct["lora0.model"].unet.state_dict()
    assert torch.equal(from_folder[TO_Q], from_file[TO_Q])


def test_a_folder_of_several_weight_files_is_ambiguous(tmp_path: Path, runner: Runner) -> None:
    for name in ("a.safetensors", "b.safetensors"):
        save_file({"x": torch.zeros(1)}, str(tmp_path / name))
    error = run_error(runner, str(tmp_path), tmp_path)
    assert "should hold one LoRA weights file (found: a.safetensors, b.safetensors)" in error.message


def test_lora_found_by_name_in_the_loras_folder(
    tmp_path: Path, runner: Runner, loras: dict[str, Path], model_folders
) -> None:
    model_folders("ComfyUI/models/loras/style.safetensors", loras["kohya"])
    by_name = runner.run(loads(workflow(("style", 1.0, 1.0)), str(tmp_path / "w.yaml")), outputs=["lora0"])
    direct = runner.run(loads(workflow((str(loras["kohya"]), 1.0, 1.0)), "w.yaml"), outputs=["lora0"])
    assert by_name.report.status()["lora0"] == "ran"
    named, pathed = by_name["lora0.model"].unet.state_dict(), direct["lora0.model"].unet.state_dict()
    assert all(torch.equal(named[k], pathed[k]) for k in named)
    assert not torch.equal(named[TO_Q], by_name["ckpt.model"].unet.state_dict()[TO_Q])


def run_error(runner: Runner, file: str, tmp_path: Path, **fields) -> UserError:
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    text = workflow((file, 1.0, 1.0)).replace("strength_clip: 1.0}", f"strength_clip: 1.0{extra}}}")
    with pytest.raises(UserError) as caught:
        runner.run(loads(text, str(tmp_path / "w.yaml")), outputs=["lora0"])
    assert caught.value.location.node == "lora0"
    assert caught.value.location.field == "file"
    return caught.value


def test_a_strength_out_of_range_is_refused_before_anything_runs(
    tmp_path: Path, capsys, loras: dict[str, Path]
) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(workflow((str(loras["kohya"]), 150.0, 1.0)))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "node 'lora0', field 'strength_model'" in err and "less than or equal to 100" in err


def test_a_missing_lora_file_is_a_located_error(tmp_path: Path, runner: Runner) -> None:
    error = run_error(runner, "nowhere.safetensors", tmp_path)
    assert "no lora file or folder 'nowhere.safetensors'" in error.message


def test_a_file_without_lora_weights_is_refused(tmp_path: Path, runner: Runner) -> None:
    save_file({"model.weight": torch.zeros(2, 2)}, str(tmp_path / "other.safetensors"))
    error = run_error(runner, str(tmp_path / "other.safetensors"), tmp_path)
    assert "not a LoRA file" in error.message


def test_a_lora_for_another_model_says_how_many_layers_matched(tmp_path: Path, runner: Runner) -> None:
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(
            2, 32
        ),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.zeros(
            32, 2
        ),
        "lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 32),
        "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(32, 2),
    }
    save_file(tensors, str(tmp_path / "xl.safetensors"))
    error = run_error(runner, str(tmp_path / "xl.safetensors"), tmp_path)
    assert "1 of its 2 UNet layers match nothing in this SD 1.x model (1 matched" in error.message
    assert "input_blocks_4_1_proj_in" in error.message
    assert "is this kohya-format LoRA for another model family?" in error.message


def test_an_sdxl_lora_is_refused_as_such(tmp_path: Path, runner: Runner) -> None:
    stem = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
    tensors = {f"{stem}.lora_down.weight": torch.zeros(2, 32), f"{stem}.lora_up.weight": torch.zeros(32, 2)}
    save_file(tensors, str(tmp_path / "xl.safetensors"))
    assert "an SDXL LoRA" in run_error(runner, str(tmp_path / "xl.safetensors"), tmp_path).message


def test_a_lora_of_the_wrong_width_is_refused(tmp_path: Path, runner: Runner) -> None:
    stem = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{stem}.lora_down.weight": torch.zeros(2, 320), f"{stem}.lora_up.weight": torch.zeros(320, 2)}
    save_file(tensors, str(tmp_path / "wide.safetensors"))
    error = run_error(runner, str(tmp_path / "wide.safetensors"), tmp_path)
    assert "(320, 320) but the model's weight is (32, 32)" in error.message


def test_pickles_are_refused_unless_allowed(tmp_path: Path, runner: Runner, loras: dict[str, Path]) -> None:
    pickle = tmp_path / "style.pt"
    torch.save(weights.read_all(loras["kohya"])[0], pickle)
    error = run_error(runner, str(pickle), tmp_path)
    assert "pickle" in error.message and "allow_pickle: true" in error.message
    allowed = workflow((str(pickle), 1.0, 1.0)).replace(
        "strength_clip: 1.0}", "strength_clip: 1.0, allow_pickle: true}"
    )
    from_pickle = pixels(runner.run(loads(allowed, "w.yaml")))
    from_safetensors = pixels(runner.run(loads(workflow((str(loras["kohya"]), 1.0, 1.0)), "w.yaml")))
    assert np.array_equal(from_pickle, from_safetensors)


def test_a_corrupt_safetensors_exits_2_with_a_located_message(tmp_path: Path, capsys) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    path = tmp_path / "w.yaml"
    path.write_text(workflow((str(broken), 1.0, 1.0)))
    assert main(["run", str(path), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "node 'lora0', field 'file'" in err and "not a valid safetensors file" in err
    assert "Traceback" not in err


def test_older_diffusers_spellings_name_the_same_layers() -> None:
    down, up = torch.zeros(2, 8), torch.zeros(8, 2)
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1"
    parsed = lora.parse(
        {
            f"unet.{module}.to_q.lora.down.weight": down,
            f"unet.{module}.to_q.lora.up.weight": up,
            f"{module}.processor.to_out_lora.down.weight": down,
            f"{module}.processor.to_out_lora.up.weight": up,
            "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight": down,
            "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight": up,
        }
    )
    names = {(layer.target, layer.name) for layer in parsed.layers}
    assert names == {
        ("unet", f"{module}.to_q"),
        ("unet", f"{module}.to_out.0"),
        ("text_encoder", "text_model.encoder.layers.0.mlp.fc1"),
    }


def test_a_kohya_lora_with_ldm_layer_names_patches_the_same_layers(loras: dict[str, Path]) -> None:
    tensors, _ = weights.read_all(loras["kohya"])
    unet = StableDiffusionPipeline.from_pretrained(str(CHECKPOINT)).unet
    to_ldm = unet_mapping(dict(unet.config), prefix="")
    flat_to_ldm = {
        "lora_unet_" + path.replace(".", "_"): "lora_unet_" + source.key[: -len(".weight")].replace(".", "_")
        for path, _ in unet.named_modules()
        if (source := to_ldm(path + ".weight"))
    }
    renamed = {}
    for key, value in tensors.items():
        stem, dot, rest = key.partition(".")
        renamed[flat_to_ldm.get(stem, stem) + dot + rest] = value
    assert sum(k.startswith(("lora_unet_input_blocks", "lora_unet_output_blocks")) for k in renamed) > 20
    ldm_layers, unmatched = lora.match(lora.parse(renamed).for_target("unet"), unet, "unet")
    assert unmatched == []
    diffusers_layers, _ = lora.match(lora.parse(tensors).for_target("unet"), unet, "unet")
    assert ldm_layers.keys() == diffusers_layers.keys()
    for path, layers in diffusers_layers.items():  # the very same tensors, under either name
        assert [(id(x.down), id(x.up)) for x in ldm_layers[path]] == [(id(x.down), id(x.up)) for x in layers]
