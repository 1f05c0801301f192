"""A full-size transformer file's diffusers config is read from its shapes alone (no config shipped per
model): built empty (meta device) in the released models' configs, mapped to the original keys, and
read back."""

from __future__ import annotations

from typing import Any

import pytest

from sdflow.models import dit_load
from sdflow.models.dit_detect import find_parts

SD3_MEDIUM = {
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "in_channels": 16,
    "out_channels": 16,
    "patch_size": 2,
    "qk_norm": None,
    "dual_attention_layers": (),
}
SD35_MEDIUM = {
    **SD3_MEDIUM,
    "qk_norm": "rms_norm",
    "dual_attention_layers": tuple(range(13)),
    "caption_projection_dim": 1536,
    "pos_embed_max_size": 384,
}
SD35_LARGE = {
    **SD3_MEDIUM,
    "num_layers": 38,
    "num_attention_heads": 38,
    "caption_projection_dim": 2432,
    "qk_norm": "rms_norm",
}
FLUX_DEV = {
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "in_channels": 64,
    "out_channels": 64,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
    "patch_size": 1,
}


def _file_shapes(family: str, config: dict[str, Any], prefix: str) -> dict[str, tuple[int, ...]]:
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = getattr(diffusers, dit_load.CLASSES[family])(**config)
    mapping = dit_load.MAPPINGS[family](dict(model.config), prefix)
    shapes = {}
    for name, tensor in model.state_dict().items():
        source = mapping(name)
        shapes[source.key] = source.file_shape(tuple(tensor.shape))
    return shapes


@pytest.mark.parametrize(
    ("family", "config", "prefix"),
    [
        ("sd3", SD3_MEDIUM, "model.diffusion_model."),
        ("sd3", SD35_MEDIUM, ""),
        ("sd3", SD35_LARGE, "model.diffusion_model."),
        ("flux", FLUX_DEV, ""),
        ("flux", {**FLUX_DEV, "guidance_embeds": False}, "model.diffusion_model."),
    ],
)
def test_the_config_read_from_a_full_size_files_shapes_is_the_models(
    family: str, config: dict[str, Any], prefix: str
) -> None:
    shapes = _file_shapes(family, config, prefix)
    found = find_parts(shapes).transformer
    assert (found.family, found.prefix) == (family, prefix)
    assert found.variant == ("sd3" if family == "sd3" else "dev" if config["guidance_embeds"] else "schnell")
    read = dit_load.transformer_config(found, shapes)
    for key, value in config.items():
        assert read[key] == value, key


def test_a_flux_file_of_other_head_width_asks_for_its_config() -> None:
    shapes = _file_shapes(
        "flux",
        {
            **FLUX_DEV,
            "num_layers": 1,
            "num_single_layers": 1,
            "attention_head_dim": 64,
            "axes_dims_rope": (16, 24, 24),
        },
        "",
    )
    with pytest.raises(dit_load.TransformerFileError, match="name the model's diffusers folder in 'config'"):
        dit_load.transformer_config(find_parts(shapes).transformer, shapes)
