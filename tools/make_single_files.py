"""Write tiny checkpoints as real single files in the original (LDM) layout, for tests.

From the built-in tiny weights (``sdflow/builtin/tiny-sd15*``) this writes, into ``--out``:

- ``sd15.safetensors`` / ``sd15-inpaint.safetensors``: SD 1.x layout (``cond_stage_model.transformer.*``
  CLIP text encoder), next to the diffusers folders they came from;
- ``sd2/`` and ``sd2.safetensors`` (epsilon), ``sd2-v/`` and ``sd2-v.safetensors`` (v-prediction,
  declared in modelspec metadata), ``sd2-inpaint/`` and ``sd2-inpaint.safetensors``: an SD 2.x-style
  variant (linear attention projections, GELU text encoder, '!' padding) as a diffusers folder and as a
  single file with an OpenCLIP text encoder (``cond_stage_model.model.transformer.resblocks.*``, fused
  q/k/v, one unused extra final block and a text projection, as real SD 2.x files have);
- ``sdxl.safetensors`` / ``sdxl-refiner.safetensors``: Stability's SDXL layout (``conditioner.embedders.N``:
  the base's CLIP ViT-L then OpenCLIP bigG, the refiner's bigG alone) from ``tiny-sdxl*``.

``write_unclip_file`` writes a StableUnCLIPImg2ImgPipeline folder (the tiny one of
``tools/make_tiny_ip_adapters.py``) as an SD 2.1 unCLIP single file in Stability's layout (``label_emb``,
``embedder.model.visual.*``, ``noise_augmentor.*``).

Files are written through the same key tables sdflow reads them with (``sdflow.models.ldm_keys``),
and tests check them against diffusers' own converter. ``python tools/make_single_files.py --out DIR``
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdflow.models.detect import LAYOUTS
from sdflow.models.ldm_write import checkpoint_state, unclip_state
from sdflow.models.loaded import text_encoder_class

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
LAYOUT = {layout.family.name: layout for layout in LAYOUTS}


def write_single_file(
    folder: Path, out: Path, family: str, metadata: dict[str, str] | None = None, dtype=torch.float32
) -> Path:
    """The diffusers ``folder`` as one single file of ``family``'s layout at ``out``."""
    return _save(single_file_state(folder, family, dtype), out, metadata)


def single_file_state(folder: Path, family: str, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The UNet, VAE and text encoder(s) of the diffusers ``folder`` under ``family``'s single-file names."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    layout = LAYOUT[family]
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    texts = []
    for part in layout.text_encoders:
        config = CLIPTextConfig.from_pretrained(folder, subfolder=part.component)
        texts.append(text_encoder_class(config).from_pretrained(folder, subfolder=part.component))
    return checkpoint_state(layout, unet, vae, texts, dtype)


def _save(state: dict[str, torch.Tensor], out: Path, metadata: dict[str, str] | None = None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, out, metadata=metadata)
    return out


def write_unclip_file(folder: Path, out: Path, encoder: bool = True, stats: bool = True) -> Path:
    """A StableUnCLIPImg2ImgPipeline ``folder`` (SD 2.x) as an unCLIP single file in Stability's layout
    (sd21-unclip-h's): the SD 2.x parts with the UNet's class embedding as ``label_emb``, the image
    encoder under ``embedder.model.visual.`` (unless not ``encoder``), the noise augmentor's schedule
    and, with ``stats``, its normaliser's mean and std (Stability's files lack those)."""
    from diffusers import DDPMScheduler
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import CLIPVisionModelWithProjection

    image_encoder = None
    if encoder:
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(folder / "image_encoder")
    scheduler = DDPMScheduler.from_pretrained(folder / "image_noising_scheduler")
    normalizer = StableUnCLIPImageNormalizer.from_pretrained(folder / "image_normalizer")
    pair = (normalizer.mean, normalizer.std) if stats else None
    state = single_file_state(folder, "sd2") | unclip_state(image_encoder, scheduler.betas, pair)
    return _save(state, out)


def make_sd2_folder(source: Path, out: Path, prediction: str) -> Path:
    """An SD 2.x-style diffusers folder from an SD 1.x one: linear attention projections in the UNet,
    a GELU text encoder, '!' padding and the given prediction type."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("unet", "text_encoder", "tokenizer"))
    unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet")
    state = {
        k: v.flatten(1) if k.endswith(("proj_in.weight", "proj_out.weight")) else v
        for k, v in unet.state_dict().items()
    }
    linear = UNet2DConditionModel.from_config({**unet.config, "use_linear_projection": True})
    linear.load_state_dict(state)
    linear.save_pretrained(out / "unet")
    text = CLIPTextModel.from_pretrained(source, subfolder="text_encoder")
    text.config.hidden_act = "gelu"
    text.save_pretrained(out / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", pad_token="!")
    tokenizer.save_pretrained(out / "tokenizer")
    scheduler = out / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler.read_text())
    scheduler.write_text(json.dumps({**config, "prediction_type": prediction}, indent=2))
    return out


def make_all(out: Path) -> dict[str, tuple[Path, Path]]:
    """Every tiny single file with the diffusers folder of the same weights: name -> (file, folder)."""
    made = {}
    for name, folder in (("sd15", BUILTIN / "tiny-sd15"), ("sd15-inpaint", BUILTIN / "tiny-sd15-inpaint")):
        made[name] = (write_single_file(folder, out / f"{name}.safetensors", "sd15"), folder)
    for name, base, prediction in (
        ("sd2", "tiny-sd15", "epsilon"),
        ("sd2-v", "tiny-sd15", "v_prediction"),
        ("sd2-inpaint", "tiny-sd15-inpaint", "epsilon"),
    ):
        folder = make_sd2_folder(BUILTIN / base, out / name, prediction)
        metadata = {"modelspec.prediction_type": "v"} if prediction == "v_prediction" else None
        made[name] = (write_single_file(folder, out / f"{name}.safetensors", "sd2", metadata), folder)
    for name, family in (("sdxl", "sdxl"), ("sdxl-refiner", "sdxl_refiner")):
        folder = BUILTIN / f"tiny-{name}"
        made[name] = (write_single_file(folder, out / f"{name}.safetensors", family), folder)
    return made


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name, (file, folder) in make_all(args.out).items():
        print(f"{name}: {file} ({file.stat().st_size // 1024} KiB) <- {folder}")


if __name__ == "__main__":
    main()
