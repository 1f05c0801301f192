"""Tiny random ControlNets and T2I-Adapters for the built-in tiny checkpoints, for tests.

Each ControlNet is ``ControlNetModel.from_unet`` of a built-in UNet with random (not zero) zero-convs
and hint output, so the control changes the picture. Written as a diffusers folder, a diffusers-layout
single file and an LDM (A1111/ComfyUI) single file through the key table sdflow reads them with.

    python tools/make_tiny_controlnets.py OUT_DIR
    python tools/make_tiny_controlnets.py --builtin   # sdflow/builtin/tiny-sd15-control
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdflow.models.controlnet import ldm_mapping

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
HINT_CHANNELS = (8, 8, 16, 16)  # three stride-2 convolutions: the VAE's 8x
_ZERO_INIT = ("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")


def tiny_controlnet(
    builtin: str, seed: int = 0, hint_channels: tuple[int, ...] = HINT_CHANNELS
) -> torch.nn.Module:
    """A ControlNet made from a built-in's UNet, every weight random and mattering."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(BUILTIN / builtin / "unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint_channels)
    with torch.no_grad():
        for name, parameter in controlnet.named_parameters():
            if name.startswith(_ZERO_INIT):
                parameter.normal_(0.0, 0.3)
    return controlnet.eval()


def tiny_adapter(seed: int = 0) -> torch.nn.Module:
    """A T2I-Adapter whose features fit the tiny SD 1.x UNet (channels 32, 64; one downsample)."""
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=1, downscale_factor=8)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.normal_(0.0, 0.2)
    return adapter.eval()


def to_ldm(controlnet: torch.nn.Module, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    """The ControlNet's weights under an LDM single file's names."""
    mapping = ldm_mapping(dict(controlnet.config), prefix)
    out = {}
    for name, tensor in controlnet.state_dict().items():
        source = mapping(name)
        if source is None:
            raise KeyError(f"no LDM name for {name}")
        out[source.key] = tensor.detach().reshape(source.file_shape(tuple(tensor.shape))).contiguous()
    return out


def write(module: torch.nn.Module, out: Path, name: str, ldm: bool = True) -> dict[str, Path]:
    """{"folder", "file" (diffusers layout), "ldm"} written under ``out`` for ``module``."""
    folder = out / name
    module.save_pretrained(folder)
    paths = {"folder": folder, "file": out / f"{name}.safetensors"}
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(paths["file"]))
    if ldm:
        paths["ldm"] = out / f"control_{name}.safetensors"
        save_file(to_ldm(module), str(paths["ldm"]))
    return paths


def make_all(out: Path) -> dict[str, dict[str, Path]]:
    """Every tiny control: sd15 (two seeds), sdxl, t2i (an SD 1.x T2I-Adapter)."""
    out.mkdir(parents=True, exist_ok=True)
    return {
        "sd15": write(tiny_controlnet("tiny-sd15", 0), out, "sd15"),
        "sd15-b": write(tiny_controlnet("tiny-sd15", 1), out, "sd15-b"),
        "sdxl": write(tiny_controlnet("tiny-sdxl", 0), out, "sdxl"),
        "t2i": write(tiny_adapter(0), out, "t2i", ldm=False),
    }


if __name__ == "__main__":
    if sys.argv[1] == "--builtin":
        tiny_controlnet("tiny-sd15", 0).save_pretrained(BUILTIN / "tiny-sd15-control")
        sys.exit(0)
    for name, paths in make_all(Path(sys.argv[1])).items():
        print(name, *(str(p) for p in paths.values()))
