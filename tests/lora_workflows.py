"""Workflows the LoRA tests share: LoadCheckpoint -> LoadLoRA (alone or drawing txt2img), and the
located refusal of a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workflows import DROP, TXT2IMG, changed, prefixed, render

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


def lora_txt2img(
    checkpoint: str,
    *chain: tuple[str | Path, float, float],
    drawing: dict[str, Any],
    plain_branch: bool = False,
) -> str:
    """txt2img at 64x64 on ``builtin:<checkpoint>`` through LoadLoRA nodes lora0, lora1... in a chain
    (file, strength_model, strength_clip); with ``plain_branch`` a second branch (plain_*) draws from
    the checkpoint directly. ``drawing``: prompt, negative, sampler, steps, seed, cfg."""
    nodes = {"ckpt": {"type": "LoadCheckpoint", "checkpoint": f'"builtin:{checkpoint}"'}}
    source = "ckpt"
    for index, (file, strength_model, strength_clip) in enumerate(chain):
        nodes[f"lora{index}"] = {
            "type": "LoadLoRA",
            "model": f"!link {source}.model",
            "clip": f"!link {source}.clip",
            "file": f'"{file}"',
            "strength_model": strength_model,
            "strength_clip": strength_clip,
        }
        source = f"lora{index}"
    for prefix, model in [("", source)] + ([("plain_", "ckpt")] if plain_branch else []):
        branch = changed(
            TXT2IMG,
            {
                "ckpt": DROP,
                "positive": {"clip": f"!link {model}.clip", "text": f'"{drawing["prompt"]}"'},
                "negative": {"clip": f"!link {model}.clip", "text": f'"{drawing["negative"]}"'},
                "schedule": {
                    "model": f"!link {model}.model",
                    "sampler": drawing["sampler"],
                    "steps": drawing["steps"],
                },
                "noised": {"seed": drawing["seed"]},
                "denoised": {"model": f"!link {model}.model", "cfg": drawing["cfg"]},
            },
        )
        nodes |= prefixed(branch, prefix)
    return render(nodes, flow=True)
