"""A single file and its diffusers folder build the same computation, checked without running it.

Pictures drawn from the two are compared bit for bit elsewhere; that claim holds on every CPU only if
nothing but the bytes' origin differs: the same module classes and configs, the same attention
implementation and processors, the same dtypes, strides and 64-byte alignment of every weight (MKL's
kernels can split their loops by operand alignment on AVX2-only CPUs), the same tokenizer and scheduler
settings. This test says which of those differ, on any machine, where a picture test only says that the
low bits moved.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sdflow.models import checkpoints, resolver
from sdflow.models.loaded import LoadOptions
from sdflow.models.weights import ALIGNMENT

CPU = torch.device("cpu")


def modules(loaded) -> dict[str, torch.nn.Module]:
    found = {"unet": loaded.unet, "vae": loaded.vae, "te0": loaded.text_encoder}
    found.update({f"te{i + 1}": m for i, m in enumerate(loaded.more_text_encoders)})
    return found


def config_of(module: torch.nn.Module) -> dict[str, Any]:
    config = module.config
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def build(module: torch.nn.Module) -> dict[str, Any]:
    """What decides the kernels a module runs, apart from the weights' values."""
    processors = getattr(module, "attn_processors", {})
    return {
        "class": type(module).__name__,
        "config": config_of(module),
        "attention": getattr(module.config, "_attn_implementation", None),
        "processors": {name: type(p).__name__ for name, p in processors.items()},
        "tensors": {
            name: (tensor.dtype, tuple(tensor.shape), tensor.stride(), tensor.data_ptr() % ALIGNMENT == 0)
            for name, tensor in module.state_dict().items()
            if tensor.numel()
        },
        "training": module.training,
    }


def tokenizer_settings(tokenizer) -> tuple:
    return (
        type(tokenizer).__name__,
        tokenizer.model_max_length,
        tokenizer.pad_token,
        tokenizer("a red circle").input_ids,
    )


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sdxl-refiner"])
def test_a_single_file_and_its_folder_build_the_same_computation(single_files, name):
    file, folder = single_files[name]
    from_file = checkpoints.load(
        resolver.checkpoint(str(file)), CPU, torch.float32, LoadOptions(config=folder)
    )
    from_folder = checkpoints.load(resolver.checkpoint(str(folder)), CPU, torch.float32, LoadOptions())
    mine, theirs = modules(from_file), modules(from_folder)
    assert mine.keys() == theirs.keys()
    for part in mine:
        assert build(mine[part]) == build(theirs[part]), part
        assert all(aligned for *_, aligned in build(mine[part])["tensors"].values()), part
        ours, other = mine[part].state_dict(), theirs[part].state_dict()
        assert all(torch.equal(ours[k], other[k]) for k in ours), part
    tokenizers = [from_file.tokenizer, *from_file.more_tokenizers]
    others = [from_folder.tokenizer, *from_folder.more_tokenizers]
    assert [tokenizer_settings(t) for t in tokenizers] == [tokenizer_settings(t) for t in others]
    assert from_file.scheduler_config == from_folder.scheduler_config
    assert from_file.family == from_folder.family
