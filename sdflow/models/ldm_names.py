"""The original LDM name of each layer of a diffusers SD UNet (``down_blocks.1.resnets.0.conv1`` is
``input_blocks.4.0.in_layers.2``): some LoRAs are keyed by these names."""

from __future__ import annotations

from typing import Any

# inside a ResNet block: diffusers layer -> LDM layer
_RESNET = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1"}
_RESNET_SHORTCUT = ("conv_shortcut", "skip_connection")
_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_out": "out.2",
    "mid_block.resnets.0": "middle_block.0",
    "mid_block.attentions.0": "middle_block.1",
    "mid_block.resnets.1": "middle_block.2",
}


def block_names(config: Any) -> dict[str, str]:
    """diffusers block path -> LDM block path for a UNet2DConditionModel config."""
    names = dict(_TOP)
    down_types, up_types = list(config.down_block_types), list(config.up_block_types)
    depth = config.layers_per_block
    depths = list(depth) if isinstance(depth, (list, tuple)) else [depth] * len(down_types)
    index = 1
    for i, kind in enumerate(down_types):
        for j in range(depths[i]):
            names[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{index}.0"
            if "CrossAttn" in kind:
                names[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if i < len(down_types) - 1:
            names[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    index = 0
    for i, kind in enumerate(up_types):
        attention = "CrossAttn" in kind
        for j in range(depths[len(depths) - 1 - i] + 1):
            names[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{index}.0"
            if attention:
                names[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if i < len(up_types) - 1:  # the upsampler follows the last block's resnet (and attention)
            slot = 2 if attention else 1
            names[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{slot}.conv"
    return names


def ldm_name(path: str, blocks: dict[str, str]) -> str | None:
    """The LDM name of the diffusers layer ``path``, or None when it has none."""
    if path in blocks:
        return blocks[path]
    block, _, layer = path.rpartition(".")
    if ".resnets." in block or block.startswith("mid_block.resnets"):
        if block in blocks:
            inner = _RESNET_SHORTCUT[1] if layer == _RESNET_SHORTCUT[0] else _RESNET.get(layer)
            return f"{blocks[block]}.{inner}" if inner else None
        return None
    for prefix, ldm in blocks.items():
        if ".attentions." in prefix and path.startswith(prefix + "."):
            return ldm + path[len(prefix) :]  # transformer layers keep their names
    return None
