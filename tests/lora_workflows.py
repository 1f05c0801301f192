"""Workflows the LoRA tests share: LoadCheckpoint -> LoadLoRA, and the located refusal of a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.runner import Runner


def lora_node(checkpoint: str, file: Path, strength_model: float, strength_clip: float) -> str:
    """LoadCheckpoint -> LoadLoRA alone (for the patched weights)."""
    return (
        "version: 1\nnodes:\n"
        f'  ckpt: {{type: LoadCheckpoint, checkpoint: "builtin:{checkpoint}"}}\n'
        f'  lora0: {{type: LoadLoRA, model: !link ckpt.model, clip: !link ckpt.clip, file: "{file}", '
        f"strength_model: {strength_model}, strength_clip: {strength_clip}}}\n"
    )


def lora_error(runner: Runner, checkpoint: str, file: Path, tmp_path: Path) -> str:
    """The message of the UserError loading ``file`` onto ``checkpoint`` raises: one line, located at
    LoadLoRA's ``file`` field."""
    with pytest.raises(UserError) as caught:
        runner.run(loads(lora_node(checkpoint, file, 1.0, 1.0), str(tmp_path / "w.yaml")), outputs=["lora0"])
    assert (caught.value.location.node, caught.value.location.field) == ("lora0", "file")
    assert "\n" not in caught.value.message
    return caught.value.message
