"""Weights read from a file sit on 64-byte boundaries whatever their offset in it, so a single file
and its diffusers folder run the same kernels (MKL's results can depend on operand alignment)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.models import checkpoints, resolver
from sdflow.models.loaded import LoadOptions
from sdflow.models.weights import ALIGNMENT, WeightReader

CPU = torch.device("cpu")


def offsets(path: Path) -> dict[str, int]:
    with WeightReader(path) as reader:
        return {name: info.start for name, info in reader._header.tensors.items()}


@pytest.fixture()
def odd_file(tmp_path: Path) -> Path:
    """A file whose second tensor starts 4 bytes past a 64-byte boundary."""
    path = tmp_path / "odd.safetensors"
    save_file({"a": torch.arange(1, dtype=torch.float32), "b": torch.arange(32, dtype=torch.float32)}, path)
    return path


def test_an_unaligned_tensor_is_read_into_aligned_memory(odd_file):
    assert offsets(odd_file)["b"] % ALIGNMENT != 0  # the premise: it lies unaligned in the file
    with WeightReader(odd_file) as reader:
        tensor = reader.read("b")
    assert tensor.data_ptr() % ALIGNMENT == 0
    assert torch.equal(tensor, torch.arange(32, dtype=torch.float32))


def aligned_file(path: Path, tensor: torch.Tensor) -> Path:
    """A safetensors file of one float32 tensor whose data start on a 64-byte boundary of the file."""
    header = json.dumps(
        {"t": {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [0, tensor.numel() * 4]}}
    )
    header += " " * (-(8 + len(header)) % ALIGNMENT)
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + tensor.numpy().tobytes())
    return path


def test_an_aligned_tensor_is_still_used_in_place(tmp_path):
    path = aligned_file(tmp_path / "aligned.safetensors", torch.arange(16, dtype=torch.float32))
    assert offsets(path)["t"] % ALIGNMENT == 0  # the premise: aligned in the file
    with WeightReader(path) as reader:
        first, again = reader.read("t"), reader.read("t")
    assert first.data_ptr() == again.data_ptr()  # the mapped pages themselves, not copies
    assert torch.equal(first, torch.arange(16, dtype=torch.float32))


def loaded_tensors(loaded) -> dict[str, torch.Tensor]:
    modules = {"unet": loaded.unet, "vae": loaded.vae, "te0": loaded.text_encoder}
    modules.update({f"te{i + 1}": m for i, m in enumerate(loaded.more_text_encoders)})
    return {f"{part}.{k}": v for part, m in modules.items() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sdxl-refiner"])
@pytest.mark.parametrize("path_kind", ["file", "folder"])
def test_every_loaded_weight_is_64_byte_aligned(single_files, name, path_kind):
    file, folder = single_files[name]
    source = resolver.checkpoint(str(file if path_kind == "file" else folder))
    options = LoadOptions(config=folder) if path_kind == "file" else LoadOptions()
    tensors = loaded_tensors(checkpoints.load(source, CPU, torch.float32, options))
    unaligned = [k for k, v in tensors.items() if v.numel() and v.data_ptr() % ALIGNMENT]
    assert tensors and unaligned == []
