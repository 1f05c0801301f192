"""HypernetworkLoader: each attention layer whose input width a hypernetwork covers projects
``x + mlp(x) * strength`` as its key and value (A1111 .pt behind the pickle opt-in, or .safetensors),
checked against MLPs written out by hand and hooked onto a fresh copy of the same UNet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from sdflow.errors import SdflowError
from sdflow.formats.comfy_json import read
from sdflow.graphs import loads
from sdflow.interop.comfy import convert
from sdflow.models.hypernetwork import ShiftedInput
from sdflow.runner import Runner

UNET = Path(__file__).resolve().parent.parent / "sdflow" / "builtin" / "tiny-sd15" / "unet"
STRENGTH = 0.7


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, Path]:
    maker = tool("make_tiny_hypernetwork.py")
    out = tmp_path_factory.mktemp("hypernetworks")
    pt, safetensors = maker.write(out, "relu")
    norm_pt, norm_safetensors = maker.write(out, "tanh", layer_norm=True)
    return {"pt": pt, "safetensors": safetensors, "norm_pt": norm_pt, "norm_safetensors": norm_safetensors}


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def loaded(runner: Runner, file: Path, strength: float = STRENGTH, allow_pickle: bool = True) -> Any:
    text = f"""
version: 1
nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: "builtin:tiny-sd15"}}
  hyper: {{type: HypernetworkLoader, model: !link ckpt.model, file: "{file}", strength: {strength},
           allow_pickle: {str(allow_pickle).lower()}}}
"""
    result = runner.run(loads(text, "hyper.yaml"), outputs=["hyper", "ckpt"])
    return result["hyper.model"], result["ckpt.model"]


def by_hand(
    layers: dict[str, torch.Tensor], activation: str, layer_norm: bool, x: torch.Tensor
) -> torch.Tensor:
    """The MLP of A1111's ``linear.N`` layers (structure 1, 2, 1) written out with plain tensor ops."""
    names = sorted({k.rsplit(".", 1)[0] for k in layers}, key=lambda n: int(n.split(".")[1]))
    linears = [n for n in names if layers[f"{n}.weight"].dim() == 2]
    for position, name in enumerate(linears):
        x = x @ layers[f"{name}.weight"].T + layers[f"{name}.bias"]
        if position < len(linears) - 1:
            x = torch.relu(x) if activation == "relu" else torch.tanh(x)
        if layer_norm:
            norm = names[names.index(name) + 1]
            x = torch.nn.functional.layer_norm(
                x, x.shape[-1:], layers[f"{norm}.weight"], layers[f"{norm}.bias"]
            )
    return x


def reference_unet(state: dict, strength: float) -> torch.nn.Module:
    """A fresh tiny UNet whose key/value projections of the file's widths get ``x + by_hand(x) *
    strength``."""
    unet = UNet2DConditionModel.from_pretrained(UNET).eval()
    activation, layer_norm = state["activation_func"], state["is_layer_norm"]
    for module in unet.modules():
        if hasattr(module, "to_k") and module.to_k.in_features in state:
            for side, projection in enumerate((module.to_k, module.to_v)):
                layers = state[module.to_k.in_features][side]

                def shift(_: Any, args: tuple, layers: dict = layers) -> tuple:
                    return (args[0] + by_hand(layers, activation, layer_norm, args[0]) * strength,)

                projection.register_forward_pre_hook(shift)
    return unet


def unet_output(unet: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        return unet(sample, 500, encoder_hidden_states=context, return_dict=False)[0]


@pytest.mark.parametrize(
    ("name", "activation", "layer_norm"),
    [
        ("pt", "relu", False),
        ("safetensors", "relu", False),
        ("norm_pt", "tanh", True),
        ("norm_safetensors", "tanh", True),
    ],
)
def test_the_patched_unet_equals_mlps_written_by_hand(
    runner, files, tool, name, activation, layer_norm
) -> None:
    state = tool("make_tiny_hypernetwork.py").a1111_state(activation, layer_norm)
    patched, base = loaded(runner, files[name])
    expected = reference_unet(state, STRENGTH)
    torch.testing.assert_close(unet_output(patched.unet), unet_output(expected), rtol=1e-5, atol=1e-5)
    shifted = [m for m in patched.unet.modules() if isinstance(m, ShiftedInput)]
    covered = [m for m in base.unet.modules() if hasattr(m, "to_k") and m.to_k.in_features in (32, 64)]
    assert len(shifted) == 2 * len(covered) > 0  # key and value of every attn1 and attn2 of those widths
    assert not any(isinstance(m, ShiftedInput) for m in base.unet.modules())  # the cached model is as it was
    assert (unet_output(patched.unet) - unet_output(base.unet)).abs().max() > 1e-3


def test_strength_zero_is_the_model_itself(runner, files) -> None:
    patched, base = loaded(runner, files["safetensors"], strength=0.0)
    assert patched.unet is base.unet


def test_a_pickle_without_the_opt_in_is_refused_before_running(runner, files) -> None:
    with pytest.raises(SdflowError) as caught:
        loaded(runner, files["pt"], allow_pickle=False)
    assert "'hyper'" in str(caught.value) and "pickle" in str(caught.value)


def test_a_file_that_is_no_hypernetwork_is_a_located_error(runner, tmp_path) -> None:
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(tmp_path / "lora.safetensors"))
    with pytest.raises(SdflowError) as caught:
        loaded(runner, tmp_path / "lora.safetensors")
    assert "'hyper'" in str(caught.value) and "not a hypernetwork" in str(caught.value)


def test_the_comfyui_node_imports_and_finds_the_file_in_the_hypernetworks_folder(
    runner, files, model_folders, tmp_path
) -> None:
    model_folders("ComfyUI/models/hypernetworks/tiny.safetensors", files["safetensors"])
    document = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "builtin:tiny-sd15"}},
        "2": {
            "class_type": "HypernetworkLoader",
            "inputs": {"model": ["1", 0], "hypernetwork_name": "tiny.safetensors", "strength": STRENGTH},
        },
    }
    path = tmp_path / "hyper.json"
    path.write_text(json.dumps(document))
    workflow = convert(read(path), str(path)).workflow
    assert workflow.nodes["hypernetwork_2"].fields["file"] == "tiny.safetensors"
    imported = runner.run(workflow, outputs=["hypernetwork_2"])["hypernetwork_2.model"]
    patched, _ = loaded(runner, files["safetensors"])
    assert torch.equal(unet_output(imported.unet), unet_output(patched.unet))
