"""Upscale models: LoadUpscaleModel equals spandrel's own loading and call; UpscaleImage's tiles blend
to the untiled result in bounded windows; pickles and unknown files are located errors.

Needs spandrel (the upscale extra; CI installs it): skipped where it is not installed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sdflow.errors import NodeError
from sdflow.models import upscale
from sdflow.nodes.base import RunContext
from sdflow.nodes.library.load_upscale_model import LoadUpscaleModel
from sdflow.nodes.library.upscale_image import UpscaleImage
from sdflow.nodes.scope import RunScope
from sdflow.nodes.types import Image
from sdflow.nodes.types_upscale import UpscaleModel

HAS_SPANDREL = importlib.util.find_spec("spandrel") is not None
needs_spandrel = pytest.mark.skipif(not HAS_SPANDREL, reason="needs spandrel: pip install 'sdflow[upscale]'")
CTX = RunContext(device=torch.device("cpu"), dtype=torch.float32)
PNG_LEVEL = 1 / 255


def architectures():
    return upscale.spandrel_module().architectures


def tiny(kind: str) -> torch.nn.Module:
    """A small real architecture with seeded random weights."""
    torch.manual_seed(0)
    arch = architectures()
    if kind == "esrgan":
        return arch.ESRGAN.ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    if kind == "compact":
        return arch.Compact.Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    return arch.SPAN.SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2)


def save(model: torch.nn.Module, path: Path) -> Path:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"params_ema": state}, path)  # RealESRGAN's nesting
    return path


def picture(width: int = 40, height: int = 24, seed: int = 1) -> Image:
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, height // 4, width // 4, generator=generator)
    smooth = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")
    return Image((smooth + 0.1 * torch.rand(1, 3, height, width, generator=generator)).clamp(0, 1))


def load(path: Path | str, **fields) -> UpscaleModel:
    return LoadUpscaleModel(file=str(path), **fields).run(CTX)["upscale_model"]


def upscaled(model: UpscaleModel, image: Image, **fields) -> torch.Tensor:
    return UpscaleImage(image=image, upscale_model=model, **fields).run(CTX)["image"].pixels


@needs_spandrel
@pytest.mark.parametrize("kind", ["esrgan", "compact", "span"])
def test_upscale_equals_spandrels_own_load_and_call(kind: str, tmp_path: Path) -> None:
    path = save(tiny(kind), tmp_path / f"{kind}.safetensors")
    image = picture()
    ours = upscaled(load(path), image, tile_size=0)
    theirs = upscale.spandrel_module().ModelLoader().load_from_file(path).eval()
    with torch.inference_mode():
        expected = theirs(image.pixels)
    assert ours.shape == expected.shape == (1, 3, 24 * theirs.scale, 40 * theirs.scale)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


@needs_spandrel
def test_pickled_upscaler_loads_weights_only_when_allowed(tmp_path: Path) -> None:
    path = save(tiny("compact"), tmp_path / "compact.pth")
    image = picture()
    expected = upscale.spandrel_module().ModelLoader().load_from_file(path).eval()(image.pixels)
    torch.testing.assert_close(upscaled(load(path, allow_pickle=True), image), expected.detach())


@needs_spandrel
def test_pickled_upscaler_is_refused_without_allow_pickle(tmp_path: Path) -> None:
    path = save(tiny("compact"), tmp_path / "compact.pth")
    assert LoadUpscaleModel.precheck({"file": str(path)}, RunScope())[0][0] == "file"
    with pytest.raises(NodeError, match="pickle") as error:
        load(path)
    assert error.value.location.field == "file"


@needs_spandrel
def test_file_spandrel_does_not_know_is_a_located_error(tmp_path: Path) -> None:
    path = tmp_path / "mystery.safetensors"
    save_file({"encoder.weight": torch.zeros(4, 4)}, str(path))
    with pytest.raises(NodeError, match="knows no upscale architecture") as error:
        load(path)
    assert error.value.location.field == "file"


@needs_spandrel
def test_tiled_equals_untiled_within_one_png_level(tmp_path: Path) -> None:
    model = load(save(tiny("compact"), tmp_path / "compact.safetensors"))
    image = picture(200, 136)
    whole = upscaled(model, image, tile_size=0)
    tiled = upscaled(model, image, tile_size=64, tile_overlap=16)
    assert tiled.shape == whole.shape == (1, 3, 272, 400)
    assert (tiled - whole).abs().max() < PNG_LEVEL


@needs_spandrel
def test_tiles_bound_what_the_model_sees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = load(save(tiny("compact"), tmp_path / "compact.safetensors"))
    descriptor = model.upscaler.descriptor
    seen: list[tuple[int, int]] = []
    call = type(descriptor).__call__

    def spy(self, window: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(window.shape[-2:]))
        return call(self, window)

    monkeypatch.setattr(type(descriptor), "__call__", spy)
    out = upscaled(model, picture(256, 192), tile_size=64, tile_overlap=8)
    assert out.shape == (1, 3, 384, 512)
    assert len(seen) == 5 * 4  # tiles a row * rows
    assert max(max(shape) for shape in seen) == 64


@needs_spandrel
def test_builtin_upscaler_doubles_a_picture_close_to_bicubic() -> None:
    model = load("builtin:tiny-upscale-2x")
    assert (model.upscaler.architecture, model.upscaler.scale) == ("RealESRGAN Compact", 2)
    image = picture(64, 64)
    bicubic = torch.nn.functional.interpolate(image.pixels, scale_factor=2, mode="bicubic").clamp(0, 1)
    assert (upscaled(model, image) - bicubic).abs().mean() < 0.02


@needs_spandrel
def test_upscaler_found_by_name_in_an_a1111_esrgan_folder(tmp_path: Path, model_folders) -> None:
    source = save(tiny("compact"), tmp_path / "source.safetensors")
    model_folders("webui/models/ESRGAN/2x_Tiny.safetensors", source)
    assert load("2x_Tiny").upscaler.scale == 2


@needs_spandrel
def test_half_precision_run_keeps_the_model_in_half_where_supported(tmp_path: Path) -> None:
    path = save(tiny("compact"), tmp_path / "compact.safetensors")
    node = LoadUpscaleModel(file=str(path))
    half = RunContext(device=torch.device("cpu"), dtype=torch.bfloat16)
    model = node.run(half)["upscale_model"]
    assert model.upscaler.descriptor.dtype == torch.bfloat16
    assert upscaled(model, picture()).dtype == torch.float32


def test_missing_spandrel_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "any.safetensors"
    save_file({"body.0.weight": torch.zeros(1)}, str(path))
    monkeypatch.delitem(sys.modules, "spandrel", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "spandrel" else real_find_spec(name, *a)
    )
    with pytest.raises(NodeError, match=r"sdflow\[upscale\]") as error:
        load(path)
    assert error.value.location.field == "file"


def comfy_upscale_graph(model_name: str) -> dict:
    """A ComfyUI API graph: load a picture, upscale it with a model, save it."""
    picture_path = str(Path(__file__).resolve().parent.parent / "examples" / "inputs" / "red_circle.png")
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": picture_path}},
        "2": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": model_name}},
        "3": {
            "class_type": "ImageUpscaleWithModel",
            "inputs": {"upscale_model": ["2", 0], "image": ["1", 0]},
        },
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "up"}},
    }


def test_comfy_upscale_nodes_import_onto_load_upscale_model_and_upscale_image() -> None:
    from sdflow.errors import Location
    from sdflow.formats.comfy_json import parse
    from sdflow.interop.comfy import convert

    conversion = convert(
        parse(comfy_upscale_graph("4x-UltraSharp.pth"), Location("api.json")), "api.json", None
    )
    types = {spec.type: spec for spec in conversion.workflow.nodes.values()}
    assert types["LoadUpscaleModel"].fields["file"] == "4x-UltraSharp.pth"
    upscale_node = types["UpscaleImage"]
    assert upscale_node.fields["upscale_model"].node == next(
        nid for nid, spec in conversion.workflow.nodes.items() if spec.type == "LoadUpscaleModel"
    )


@needs_spandrel
def test_imported_comfy_upscale_workflow_doubles_the_picture_with_the_builtin(tmp_path: Path) -> None:
    from sdflow.errors import Location
    from sdflow.formats.comfy_json import parse
    from sdflow.graphs.yaml_io import dumps, loads
    from sdflow.interop.comfy import convert
    from sdflow.runner import Runner

    workflow = convert(
        parse(comfy_upscale_graph("builtin:tiny-upscale-2x"), Location("api.json")), "api.json", None
    ).workflow
    [target] = [nid for nid, spec in workflow.nodes.items() if spec.type == "UpscaleImage"]
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    result = runner.run(loads(dumps(workflow), "c.yaml"), outputs=[target])
    [source] = [nid for nid, spec in workflow.nodes.items() if spec.type == "LoadImage"]
    small = runner.run(loads(dumps(workflow), "c.yaml"), outputs=[source])[f"{source}.image"].pixels
    assert result[f"{target}.image"].pixels.shape[-2:] == (small.shape[-2] * 2, small.shape[-1] * 2)
