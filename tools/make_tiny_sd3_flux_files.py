"""Write the tiny SD3 and Flux built-ins as the files users have, for tests.

From the diffusers folders ``sdflow/builtin/tiny-sd3`` and ``tiny-flux`` (made by
tools/make_tiny_sd3_flux.py) this writes, per family, a ComfyUI-style models folder under ``--out``:

- ``checkpoints/<family>.safetensors``: one all-in-one file in the layout ComfyUI / Stability ship
  (``model.diffusion_model.*`` transformer, ``text_encoders.clip_l|clip_g|t5xxl.transformer.*``,
  ``first_stage_model.*`` VAE);
- the split layout: ``diffusion_models/<family>.safetensors`` (SD3: MMDiT keys under
  ``model.diffusion_model.`` as Stability ships them; Flux: bare BFL keys as Black Forest Labs ships
  them), ``text_encoders/clip_l.safetensors`` (``clip_g``, ``t5xxl``: transformers' own key names, as
  ComfyUI users keep them), ``vae/<family>-vae.safetensors`` (LDM VAE keys, bare, like Flux's ae);
- ``unet/<family>-fp8.safetensors``: the transformer in float8_e4m3fn (as ComfyUI's fp8 files are);
- ``diffusion_models/<family>-Q8_0.gguf``: the transformer quantized (Q8_0 where a row is a whole
  number of 32-value blocks, else F32), in city96's layout, if the ``gguf`` package is installed;
- ``loras/<family>-peft.safetensors`` (diffusers / PEFT names) and ``loras/<family>-kohya.safetensors``
  (kohya's ``lora_unet_<original key>`` names, on the original layout's fused modules);
- Flux also ``diffusion_models/flux-schnell.safetensors``: the transformer without guidance embedding.

Keys are written through sdflow's own tables (``sdflow.models.dit_keys``, ``ldm_keys``); the tests read
the files back with diffusers' converters. ``python tools/make_tiny_sd3_flux_files.py --out DIR``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from sdflow.models.dit_keys import flux_mapping, sd3_mapping, t5_mapping
from sdflow.models.ldm_keys import clip_mapping, vae_mapping
from sdflow.models.ldm_write import to_file

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
UNET = "model.diffusion_model."
# family -> (its folder's text encoder folders, in order, and the name each has in the files)
ENCODERS = {
    "sd3": (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl")),
    "flux": (("text_encoder", "clip_l"), ("text_encoder_2", "t5xxl")),
}
LORA_RANK = 4
LORA_SEED = 4100


def folder_of(family: str, builtin: Path = BUILTIN) -> Path:
    return builtin / f"tiny-{family}"


def load_parts(folder: Path, family: str) -> dict[str, torch.nn.Module]:
    """The folder's transformer, VAE and text encoders (by their file names: clip_l, clip_g, t5xxl)."""
    import transformers
    from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

    cls = SD3Transformer2DModel if family == "sd3" else FluxTransformer2DModel
    parts: dict[str, torch.nn.Module] = {
        "transformer": cls.from_pretrained(folder, subfolder="transformer"),
        "vae": AutoencoderKL.from_pretrained(folder, subfolder="vae"),
    }
    for sub, name in ENCODERS[family]:
        architecture = json.loads((folder / sub / "config.json").read_text())["architectures"][0]
        parts[name] = getattr(transformers, architecture).from_pretrained(folder, subfolder=sub)
    return parts


def transformer_state(
    model: torch.nn.Module, family: str, prefix: str, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    mapping = sd3_mapping if family == "sd3" else flux_mapping
    return to_file(model, mapping(dict(model.config), prefix), dtype)


def encoder_state(name: str, model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """One text encoder under transformers' own names (``prefix`` before them)."""
    if name == "t5xxl":
        state = to_file(model, t5_mapping(prefix), None)
        state.pop(prefix + "encoder.embed_tokens.weight", None)
        return state
    return to_file(model, clip_mapping(prefix), None)


def all_in_one_state(parts: dict[str, torch.nn.Module], family: str) -> dict[str, torch.Tensor]:
    """Transformer, text encoders and VAE in one state dict, as ComfyUI's all-in-one files hold them."""
    state = transformer_state(parts["transformer"], family, UNET)
    for _, name in ENCODERS[family]:
        state |= encoder_state(name, parts[name], f"text_encoders.{name}.transformer.")
    vae = parts["vae"]
    return state | to_file(vae, vae_mapping(dict(vae.config), "first_stage_model."), None)


def write_gguf(state: dict[str, torch.Tensor], out: Path, architecture: str) -> Path | None:
    """``state`` as a GGUF file, Q8_0 where a row is whole 32-value blocks (None without ``gguf``)."""
    try:
        import gguf
    except ImportError:
        return None
    writer = gguf.GGUFWriter(str(out), arch=architecture)
    for key, tensor in state.items():
        data = tensor.float().numpy()
        if tensor.ndim == 2 and tensor.shape[1] % 32 == 0:
            kind = gguf.GGMLQuantizationType.Q8_0
            writer.add_tensor(key, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(key, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def lora_targets(model: torch.nn.Module) -> list[str]:
    """The transformer's attention projections and feed-forward layers (diffusers names)."""
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    keep = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.2", "proj_mlp")
    return [n for n in names if n.endswith(keep) and "blocks." in n]


def peft_lora(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A random LoRA in diffusers / PEFT names (``transformer.<module>.lora_A/lora_B.weight``)."""
    generator = torch.Generator().manual_seed(seed)
    modules = dict(model.named_modules())
    state = {}
    for name in lora_targets(model):
        linear = modules[name]
        down = torch.randn(LORA_RANK, linear.in_features, generator=generator) * 0.3
        up = torch.randn(linear.out_features, LORA_RANK, generator=generator) * 0.3
        state[f"transformer.{name}.lora_A.weight"] = down
        state[f"transformer.{name}.lora_B.weight"] = up
    return state


def kohya_lora(
    model: torch.nn.Module, family: str, seed: int, skip: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """A random LoRA on the original layout's modules, in kohya's names: for each 2-D weight of a
    block in the original file, ``lora_unet_<key with _>.lora_down/lora_up.weight`` and ``.alpha``
    (half the rank: the delta is up @ down * alpha / rank). ``skip``: key parts left out."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, weight in transformer_state(model, family, "").items():
        if weight.ndim != 2 or not key.endswith(".weight") or "blocks." not in key or "mod" in key:
            continue
        if any(part in key for part in skip):
            continue
        stem = "lora_unet_" + key.removesuffix(".weight").replace(".", "_")
        state[f"{stem}.lora_down.weight"] = torch.randn(LORA_RANK, weight.shape[1], generator=generator) * 0.3
        state[f"{stem}.lora_up.weight"] = torch.randn(weight.shape[0], LORA_RANK, generator=generator) * 0.3
        state[f"{stem}.alpha"] = torch.tensor(LORA_RANK / 2)
    return state


# diffusers' kohya-Flux converter splits a single block's linear1 at full-size widths (3072, 12288):
# the tiny LoRA leaves it out so that converter can read the file
KOHYA_SKIP = {"sd3": (), "flux": ("linear1",)}


def make_family(out: Path, family: str, folder: Path) -> dict[str, Path]:
    """Every file of one family under ``out`` (a ComfyUI-style models folder); name -> path."""
    parts = load_parts(folder, family)
    transformer = parts["transformer"]
    files: dict[str, Path] = {"folder": folder, "root": out}

    def save(relative: str, state: dict[str, torch.Tensor], name: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        files[name] = path

    save(f"checkpoints/{family}.safetensors", all_in_one_state(parts, family), "all_in_one")
    prefix = UNET if family == "sd3" else ""  # Stability ships the prefix, BFL bare keys
    bare = transformer_state(transformer, family, prefix)
    save(f"diffusion_models/{family}.safetensors", bare, "transformer")
    fp8 = transformer_state(transformer, family, prefix, torch.float8_e4m3fn)
    save(f"unet/{family}-fp8.safetensors", fp8, "fp8")
    for _, name in ENCODERS[family]:
        save(f"text_encoders/{name}.safetensors", encoder_state(name, parts[name]), name)
    vae = parts["vae"]
    save(f"vae/{family}-vae.safetensors", to_file(vae, vae_mapping(dict(vae.config), ""), None), "vae")
    gguf_path = out / f"diffusion_models/{family}-Q8_0.gguf"
    gguf_file = write_gguf(transformer_state(transformer, family, ""), gguf_path, family)
    if gguf_file is not None:
        files["gguf"] = gguf_file
    save(f"loras/{family}-peft.safetensors", peft_lora(transformer, LORA_SEED), "lora_peft")
    kohya = kohya_lora(transformer, family, LORA_SEED + 1, KOHYA_SKIP[family])
    save(f"loras/{family}-kohya.safetensors", kohya, "lora_kohya")
    if family == "flux":
        schnell = {k: v for k, v in bare.items() if not k.startswith("guidance_in.")}
        save("diffusion_models/flux-schnell.safetensors", schnell, "schnell")
    return files


def make_all(out: Path, builtin: Path = BUILTIN) -> dict[str, dict[str, Path]]:
    """Both families' files under ``out/<family>/`` (family -> name -> path)."""
    return {family: make_family(out / family, family, folder_of(family, builtin)) for family in ENCODERS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--builtin", type=Path, default=BUILTIN, help="where tiny-sd3 / tiny-flux are")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for family, files in make_all(args.out, args.builtin).items():
        for name, path in files.items():
            print(f"{family} {name}: {path}")


if __name__ == "__main__":
    main()
