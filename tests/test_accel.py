"""Model settings (sliced attention, channels_last, compile, offload): wired, in the cache keys, and
leaving the pictures as they were."""

from __future__ import annotations

from pathlib import Path

import torch

import sdflow
from sdflow.nodes.types import Model
from sdflow.runner import Runner
from sdflow.runner.devices.accel import Acceleration, ModelOffload

CPU = torch.device("cpu")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _tiny_txt2img(runner: Runner) -> torch.Tensor:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = "builtin:tiny-sd15"
    return runner.run(graph, inputs={"steps": 2}, outputs=["decoded"]).tensor("decoded")


def test_sliced_attention_gives_the_same_picture(tmp_path: Path) -> None:
    plain = _tiny_txt2img(Runner(device="cpu", dtype="fp32"))
    sliced = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(attention="sliced"))

    assert torch.allclose(_tiny_txt2img(sliced), plain, atol=1e-4)


def test_channels_last_gives_the_same_picture() -> None:
    plain = _tiny_txt2img(Runner(device="cpu", dtype="fp32"))
    nhwc = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(channels_last=True))

    assert torch.allclose(_tiny_txt2img(nhwc), plain, atol=1e-4)
    unet = next(v for v in nhwc.models._entries.values())[0]["model"].unet
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_model_settings_are_part_of_the_cache_keys() -> None:
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    plain = Runner(device="cpu", dtype="fp32").keys(graph)
    sliced = Runner(device="cpu", dtype="fp32", acceleration=Acceleration(attention="sliced")).keys(graph)

    assert plain["ckpt"] != sliced["ckpt"]


def test_offload_is_nothing_to_do_on_the_cpu() -> None:
    acceleration = Acceleration(offload="model")

    assert acceleration.load_device(CPU) == CPU and acceleration.key(CPU) == ""
    assert acceleration.load_device(torch.device("cuda")) == CPU


def test_offloaded_models_take_turns_on_the_device_and_their_inputs_follow() -> None:
    # On a CPU-only machine the "device" is the CPU too; what is checked is the turn-taking.
    group = ModelOffload(CPU)
    first, second = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    group.add(first)
    group.add(second)

    first(torch.ones(1, 2))
    assert group.resident is first
    second(torch.ones(1, 2))
    assert group.resident is second and first.sdflow_execution_device == CPU


def test_compile_compiles_the_unet_in_place_without_running_it() -> None:
    unet = torch.nn.Linear(2, 2)

    outputs = Acceleration(compile=True).apply({"model": Model(unet, {})}, CPU)

    assert outputs["model"].unet is unet and unet._compiled_call_impl is not None
    assert Acceleration(compile=True).key(CPU) == "compile"
