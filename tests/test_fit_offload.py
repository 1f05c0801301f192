"""Memory for SD3 / Flux: a model too large for the free memory is a located error before it loads
(a fake small limit here), and --offload model takes every text encoder off the device in turn."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.models import fit
from sdflow.models.families import SD3
from sdflow.nodes.types import Clip
from sdflow.runner import Runner
from sdflow.runner.devices.accel import Acceleration


def load_file_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from sdflow.models.weights import read_header

    return read_header(path).shapes()


def _run(runner: Runner, text: str, tmp_path: Path, node: str) -> None:
    runner.run(loads(text, str(tmp_path / "w.yaml")), outputs=[node])


def test_a_transformer_larger_than_the_free_memory_is_refused_before_loading(
    runner: Runner, sd3_flux_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file = sd3_flux_files["flux"]["transformer"]
    graph = (
        "version: 1\nnodes:\n"
        f'  unet: {{type: LoadDiffusionModel, file: "{file}", config: "builtin:tiny-flux"}}\n'
    )
    monkeypatch.setenv("SDFLOW_MEMORY_LIMIT", "100K")  # the tiny transformer's fp32 weights: ~0.3 MB
    with pytest.raises(UserError) as caught:
        _run(runner, graph, tmp_path, "unet")
    assert (caught.value.location.node, caught.value.location.field) == ("unet", "file")
    needed = fit.size_text(fit.weight_bytes(load_file_shapes(file), torch.float32))
    assert f"needs {needed} for its weights but cpu has 100.0 KB free" in caught.value.message
    assert "fp8_e4m3fn" in caught.value.message  # what to do instead
    fp8 = graph.replace(str(file), str(sd3_flux_files["flux"]["fp8"])).replace(
        "}\n", ", weight_dtype: fp8_e4m3fn}\n"
    )
    _run(runner, fp8, tmp_path, "unet")  # 8-bit weights fit where fp32 ones do not
    monkeypatch.setenv("SDFLOW_MEMORY_LIMIT", "1G")
    _run(runner, graph, tmp_path, "unet")


def test_the_text_encoders_are_checked_together(sd3_flux_files, monkeypatch: pytest.MonkeyPatch) -> None:
    from sdflow.models import split_load

    files = sd3_flux_files["sd3"]
    paths = [files[n] for n in ("clip_l", "clip_g", "t5xxl")]
    monkeypatch.setenv("SDFLOW_MEMORY_LIMIT", "300K")
    with pytest.raises(fit.ModelTooLarge, match=r"the text encoders \(.*T5 text encoder\).*--offload model"):
        split_load.load_text_encoders(paths, SD3, torch.device("cpu"), torch.float32, files["folder"])


def test_the_memory_limit_reads_sizes_and_refuses_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDFLOW_MEMORY_LIMIT", "1.5G")
    assert fit.free_bytes(torch.device("cpu")) <= int(1.5 * (1 << 30))
    monkeypatch.setenv("SDFLOW_MEMORY_LIMIT", "lots")
    with pytest.raises(fit.ModelTooLarge, match="not a size"):
        fit.free_bytes(torch.device("cpu"))


def test_offload_puts_every_text_encoder_in_the_turn_taking() -> None:
    encoders = [torch.nn.Linear(2, 2) for _ in range(3)]
    clip = Clip(None, encoders[0], SD3, None, encoders[1], None, encoders[2])
    device = torch.device("meta")  # any non-CPU device: the turn-taking is what is checked
    Acceleration(offload="model").apply({"clip": clip}, device)
    assert all(getattr(e, "sdflow_execution_device", None) == device for e in encoders)
    assert all(e._forward_pre_hooks for e in encoders)
