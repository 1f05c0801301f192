"""LoadLoRA with LyCORIS LoHa and LoKr files (kohya-named, SD 1.5 and SDXL): every patched weight is
the base weight plus strength times the LyCORIS formula, computed here in plain float64 torch; Tucker
and DoRA files are refused in one located line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from lora_workflows import lora_error, lora_node
from safetensors.torch import load_file, save_file
from workflows import txt2img

from sdflow.cli import main
from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ROOT / "sdflow" / "builtin"
PIPELINES = {"tiny-sd15": StableDiffusionPipeline, "tiny-sdxl": StableDiffusionXLPipeline}
ENCODERS = ("text_encoder", "text_encoder_2")
# LoKr files by which factors are low-rank pairs: the rank giving alpha / rank is w2's, else w1's, else none
LOKR = {"lokr": ("w2",), "lokr_full": (), "lokr_w1": ("w1",), "lokr_both": ("w1", "w2")}
KINDS = ("loha", *LOKR, "mixed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[tuple[str, str], Path]:
    """(checkpoint, kind) -> a tiny file written by tools/make_tiny_loras.py; "mixed" holds plain LoRA,
    LoHa and LoKr layers in turn."""
    folder = tmp_path_factory.mktemp("lycoris")
    make = tool("make_tiny_loras.py")
    made: dict[tuple[str, str], Path] = {}
    for checkpoint, pipeline in PIPELINES.items():
        pipe = pipeline.from_pretrained(str(BUILTIN / checkpoint))
        models = (pipe.unet, pipe.text_encoder, 4)  # and the rank
        extra = {"text_encoder_2": getattr(pipe, "text_encoder_2", None)}
        made[checkpoint, "loha"] = make.write_lycoris(
            folder / f"{checkpoint}_loha.safetensors", "loha", *models, 1, **extra
        )
        for kind, factored in LOKR.items():
            path = folder / f"{checkpoint}_{kind}.safetensors"
            made[checkpoint, kind] = make.write_lycoris(path, "lokr", *models, 2, factored=factored, **extra)
        parts = [
            make.kohya_lora(*models, 3, **extra),
            load_file(made[checkpoint, "loha"]),
            load_file(made[checkpoint, "lokr_both"]),
        ]
        stems = sorted({key.partition(".")[0] for key in parts[0]})
        mixed = {
            key: value
            for index, stem in enumerate(stems)
            for key, value in parts[index % 3].items()
            if key.partition(".")[0] == stem
        }
        assert all(
            any(f".{kind}" in key for key in mixed) for kind in ("lora_down", "hada_w1_a", "lokr_w1_a")
        )
        made[checkpoint, "mixed"] = folder / f"{checkpoint}_mixed.safetensors"
        save_file(mixed, str(made[checkpoint, "mixed"]))
    return made


def kron(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The Kronecker product of a matrix and a matrix or a conv kernel, written out: block (i, j) is
    ``a[i, j] * b``."""
    kernel = (1,) * (b.dim() - 2)
    blocks = a.reshape(a.shape[0], 1, a.shape[1], 1, *kernel) * b.reshape(1, b.shape[0], 1, *b.shape[1:])
    return blocks.reshape(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1], *b.shape[2:])


def expected_update(tensors: dict[str, torch.Tensor], stem: str, shape: torch.Size) -> torch.Tensor:
    """The layer's update by the LyCORIS / kohya formulas, in float64."""
    t = {
        key.partition(".")[2]: value.double()
        for key, value in tensors.items()
        if key.partition(".")[0] == stem
    }
    alpha = float(t["alpha"])
    if "lora_down.weight" in t:
        down, up = t["lora_down.weight"], t["lora_up.weight"]
        rank = down.shape[0]
        return (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape(shape) * alpha / rank
    if "hada_w1_a" in t:
        product = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
        return product.reshape(shape) * alpha / t["hada_w1_b"].shape[0]
    w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
    w2 = t["lokr_w2"] if "lokr_w2" in t else t["lokr_w2_a"] @ t["lokr_w2_b"]
    if "lokr_w2_b" in t:
        scale = alpha / t["lokr_w2_b"].shape[0]
    elif "lokr_w1_b" in t:
        scale = alpha / t["lokr_w1_b"].shape[0]
    else:
        scale = 1.0  # both whole: no rank, alpha is not used
    return kron(w1, w2).reshape(shape) * scale


@pytest.mark.parametrize("checkpoint", PIPELINES)
@pytest.mark.parametrize("kind", KINDS)
def test_patched_weights_are_base_plus_strength_times_the_formula(
    runner: Runner, files: dict[tuple[str, str], Path], tool, checkpoint: str, kind: str
) -> None:
    strength_model, strength_clip = 0.7, -1.3
    result = runner.run(
        loads(lora_node(checkpoint, files[checkpoint, kind], strength_model, strength_clip), "w.yaml")
    )
    tensors = load_file(files[checkpoint, kind])
    reference = PIPELINES[checkpoint].from_pretrained(str(BUILTIN / checkpoint))
    roots = {"unet": (reference.unet, "model", "unet", strength_model)}
    for name in ENCODERS:
        if getattr(reference, name, None) is not None:
            roots[name] = (getattr(reference, name), "clip", name, strength_clip)
    stems = {
        id(module): stem
        for stem, module in tool("make_tiny_loras.py")._kohya_layers(
            reference.unet, reference.text_encoder, getattr(reference, "text_encoder_2", None)
        )
    }
    checked: list[tuple[int, ...]] = []  # the shapes of the weights checked
    for root, output, attribute, strength in roots.values():
        patched = getattr(result[f"lora0.{output}"], attribute)
        base = getattr(result[f"ckpt.{output}"], attribute)
        paths = {id(module): path for path, module in root.named_modules()}
        layer_paths = {paths[i]: stem for i, stem in stems.items() if i in paths}
        for path, module in patched.named_modules():
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            before = base.get_submodule(path).weight
            if path not in layer_paths:
                assert module.weight is before, path  # shared, not copied
                continue
            want = before.double() + strength * expected_update(tensors, layer_paths[path], before.shape)
            assert torch.allclose(module.weight.double(), want, rtol=1e-6, atol=1e-7), path
            assert not torch.equal(module.weight, before), path
            checked.append(tuple(before.shape))
    assert len(checked) == len(stems)
    assert any(len(shape) == 4 and shape[2:] == (3, 3) for shape in checked)  # a 3x3 conv among them


def lora_workflow(checkpoint: str, file: Path, strength: float, source: str = "lora0") -> str:
    """txt2img on ``checkpoint`` drawing with the model and clip of ``source`` (LoadLoRA lora0 or ckpt)."""
    lora = {"type": "LoadLoRA", "model": "!link ckpt.model", "clip": "!link ckpt.clip", "file": f'"{file}"'}
    return txt2img(
        flow=True,
        ckpt={"checkpoint": f'"builtin:{checkpoint}"'},
        lora0={**lora, "strength_model": strength, "strength_clip": strength},
        positive={"clip": f"!link {source}.clip", "text": '"a red circle"'},
        negative={"clip": f"!link {source}.clip", "text": '"blurry"'},
        schedule={"model": f"!link {source}.model", "sampler": "euler", "steps": 3},
        noised={"seed": 3},
        denoised={"model": f"!link {source}.model", "cfg": 5.0},
    )


def picture(
    runner: Runner, checkpoint: str, file: Path, strength: float, source: str = "lora0"
) -> np.ndarray:
    text = lora_workflow(checkpoint, file, strength, source)
    return runner.run(loads(text, "w.yaml"))["decoded.image"].pixels.numpy()


@pytest.mark.parametrize(
    ("checkpoint", "kind"), [("tiny-sd15", "loha"), ("tiny-sd15", "lokr"), ("tiny-sdxl", "mixed")]
)
def test_the_lora_changes_the_picture(runner: Runner, files, checkpoint: str, kind: str) -> None:
    plain = picture(runner, checkpoint, files[checkpoint, kind], 1.0, source="ckpt")
    patched = picture(runner, checkpoint, files[checkpoint, kind], 1.0)
    assert float(np.abs(patched - plain).max()) > 0.05


@pytest.mark.parametrize("kind", ["loha", "lokr"])
def test_strength_zero_returns_the_base_models_themselves(runner: Runner, files, kind: str) -> None:
    result = runner.run(loads(lora_node("tiny-sdxl", files["tiny-sdxl", kind], 0.0, 0.0), "w.yaml"))
    assert result["lora0.model"].unet is result["ckpt.model"].unet
    for name in ENCODERS:
        assert getattr(result["lora0.clip"], name) is getattr(result["ckpt.clip"], name)


def refused(tmp_path: Path, runner: Runner, files, extra: dict[str, torch.Tensor]) -> str:
    tensors = load_file(files["tiny-sd15", "loha"]) | extra
    path = tmp_path / "variant.safetensors"
    save_file(tensors, str(path))
    return lora_error(runner, "tiny-sd15", path, tmp_path)


STEM = "lora_unet_down_blocks_0_resnets_0_conv1"


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        (f"{STEM}.hada_t1", "Tucker"),
        (f"{STEM}.lokr_t2", "Tucker"),
        (f"{STEM}.lora_mid.weight", "Tucker"),
        (f"{STEM}.dora_scale", "DoRA"),
    ],
)
def test_tucker_and_dora_are_refused_at_the_file_field(
    tmp_path: Path, runner: Runner, files, key: str, kind: str
) -> None:
    message = refused(tmp_path, runner, files, {key: torch.zeros(2, 2, 3, 3)})
    assert f"a {kind} LoRA (keys such as {key}), which is not supported" in message


def test_a_loha_layer_missing_a_matrix_names_it(tmp_path: Path, runner: Runner, files) -> None:
    tensors = load_file(files["tiny-sd15", "loha"])
    del tensors[f"{STEM}.hada_w2_b"]
    path = tmp_path / "broken.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(UserError) as caught:
        runner.run(loads(lora_node("tiny-sd15", path, 1.0, 1.0), str(tmp_path / "w.yaml")), outputs=["lora0"])
    assert f"layer {STEM}: a LoHa layer without hada_w2_b" in caught.value.message


def test_a_dora_file_exits_2_with_one_located_line(tmp_path: Path, capsys, files) -> None:
    tensors = load_file(files["tiny-sd15", "lokr"]) | {f"{STEM}.dora_scale": torch.ones(32, 1, 1, 1)}
    save_file(tensors, str(tmp_path / "dora.safetensors"))
    workflow = tmp_path / "w.yaml"
    workflow.write_text(lora_workflow("tiny-sd15", tmp_path / "dora.safetensors", 1.0))
    assert main(["run", str(workflow), "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "node 'lora0', field 'file'" in err and "a DoRA LoRA" in err
    assert "Traceback" not in err


def test_loha_layers_outside_the_kohya_naming_are_refused() -> None:
    from sdflow.models import lora

    peft_named = {
        f"unet.down_blocks.0.attn.to_q.hada_w{i}_{p}": torch.zeros(2, 2) for i in (1, 2) for p in "ab"
    }
    with pytest.raises(lora.LoraError, match="LoHa / LoKr layers are read in the kohya naming only"):
        lora.parse(peft_named)
