"""`sdflow import comfy` of picture-prompted workflows: CLIPVisionLoader, CLIPVisionEncode,
unCLIPCheckpointLoader, unCLIPConditioning and ComfyUI_IPAdapter_plus's IPAdapterModelLoader,
IPAdapterApply and IPAdapterAdvanced map onto sdflow's nodes (API and UI format) and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from workflows import comfy_converted, spec_of_type

from sdflow.formats.comfy_json import read
from sdflow.graphs.yaml_io import loads
from sdflow.interop.comfy import ConversionError, convert
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "sdflow" / "builtin" / "tiny-sd15")


def node(kind: str, **inputs) -> dict:
    return {"class_type": kind, "inputs": inputs}


def graph(
    files: dict[str, Path], apply: dict, checkpoint: dict | None = None, positive: list | None = None
) -> dict:
    return {
        "1": checkpoint or node("CheckpointLoaderSimple", ckpt_name=TINY),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle"),
        "3": node("CLIPTextEncode", clip=["1", 1], text="blurry"),
        "4": node("LoadImage", image=str(files["picture"])),
        "5": node("CLIPVisionLoader", clip_name=str(files["encoder_file"])),
        "6": node("IPAdapterModelLoader", ipadapter_file=str(files["sd15-plus"])),
        "7": node("EmptyLatentImage", width=64, height=64, batch_size=1),
        "8": node(
            "KSampler",
            model=["10", 0] if apply else ["1", 0],
            positive=positive or ["2", 0],
            negative=["3", 0],
            latent_image=["7", 0],
            seed=5,
            steps=4,
            cfg=5.0,
            sampler_name="ddim",
            scheduler="normal",
            denoise=1.0,
        ),
        "9": node("VAEDecode", samples=["8", 0], vae=["1", 2]),
        **({"10": apply} if apply else {}),
        "11": node("SaveImage", images=["9", 0], filename_prefix="vision"),
    }


def advanced(**changes) -> dict:
    inputs = {
        "model": ["1", 0], "ipadapter": ["6", 0], "image": ["4", 0], "clip_vision": ["5", 0], "weight": 0.8,
        "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.1, "end_at": 0.9,
        "embeds_scaling": "V only",
    }  # fmt: skip
    return {"class_type": "IPAdapterAdvanced", "inputs": {**inputs, **changes}}


def decoded(text: str) -> np.ndarray:
    result = Runner(device="cpu", dtype="fp32").run(loads(text, "c.yaml"), outputs=["decode_9"])
    return result["decode_9.image"].pixels.numpy()


def test_ipadapter_advanced_maps_weight_window_and_files(vision_files) -> None:
    conversion, text = comfy_converted(graph(vision_files, advanced()))
    apply = spec_of_type(conversion.workflow, "ApplyIPAdapter")
    fields = apply.fields
    assert (fields["weight"], fields["start_percent"], fields["end_percent"]) == (0.8, 0.1, 0.9)
    assert spec_of_type(conversion.workflow, "LoadIPAdapter").fields["file"] == str(vision_files["sd15-plus"])
    assert spec_of_type(conversion.workflow, "LoadCLIPVision").fields["file"] == str(
        vision_files["encoder_file"]
    )
    assert fields["model"].node == spec_of_type(conversion.workflow, "LoadCheckpoint").id
    assert not conversion.notes or all("approximated" not in n for n in conversion.notes)
    _, plain = comfy_converted(graph(vision_files, {}))
    assert np.abs(decoded(text) - decoded(plain)).max() > 0.01  # imported, the adapter acts


def test_ipadapter_options_sdflow_lacks_are_noted(vision_files) -> None:
    apply = advanced(weight_type="style transfer", embeds_scaling="K+V", combine_embeds="average")
    conversion, _ = comfy_converted(graph(vision_files, apply))
    notes = " ".join(conversion.notes)
    assert "style transfer" in notes and "K+V" in notes and "average" in notes


def test_the_first_ipadapter_apply_node_maps_too(vision_files) -> None:
    apply = node(
        "IPAdapterApply", ipadapter=["6", 0], clip_vision=["5", 0], image=["4", 0], model=["1", 0],
        weight=0.6, noise=0.0, weight_type="original", start_at=0.0, end_at=0.5, unfold_batch=False,
    )  # fmt: skip
    conversion, _ = comfy_converted(graph(vision_files, apply))
    fields = spec_of_type(conversion.workflow, "ApplyIPAdapter").fields
    assert (fields["weight"], fields["end_percent"]) == (0.6, 0.5)


def test_the_simple_ipadapter_node_without_a_clip_vision_is_reported(vision_files) -> None:
    apply = node(
        "IPAdapter", model=["1", 0], ipadapter=["6", 0], image=["4", 0], weight=1.0, start_at=0, end_at=1
    )
    with pytest.raises(ConversionError, match="IPAdapterUnifiedLoader"):
        comfy_converted(graph(vision_files, apply))


def unclip_graph(files: dict[str, Path], checkpoint: Path) -> dict:
    """unCLIPCheckpointLoader of ``checkpoint``, its CLIP vision output encoding the picture, and
    unCLIPConditioning on the positive prompt."""
    loader = node("unCLIPCheckpointLoader", ckpt_name=str(checkpoint))
    comfy = graph(files, {}, loader, positive=["13", 0])
    comfy["12"] = node("CLIPVisionEncode", clip_vision=["1", 3], image=["4", 0], crop="center")
    comfy["13"] = node(
        "unCLIPConditioning",
        conditioning=["2", 0],
        clip_vision_output=["12", 0],
        strength=0.9,
        noise_augmentation=0.1,
    )
    return comfy


def test_an_unclip_workflow_imports_and_runs(vision_files) -> None:
    conversion, text = comfy_converted(unclip_graph(vision_files, vision_files["unclip"]))
    fields = spec_of_type(conversion.workflow, "unCLIPConditioning").fields
    assert (fields["strength"], fields["noise_augmentation"]) == (0.9, 0.1)
    encode = spec_of_type(conversion.workflow, "CLIPVisionEncode")
    assert encode.fields["clip_vision"].output == "clip_vision"
    assert decoded(text).shape == (1, 3, 64, 64)


def test_an_unclip_single_file_imports_and_draws_the_folders_picture(vision_files, unclip_files) -> None:
    """unCLIPCheckpointLoader on an sd21-unclip-style single file: LoadCheckpoint of the file, whose
    clip_vision is the file's embedder; it draws the folder's picture."""

    def drawn(checkpoint: Path, config: Path | None = None) -> np.ndarray:
        conversion, _ = comfy_converted(unclip_graph(vision_files, checkpoint))
        loader = spec_of_type(conversion.workflow, "LoadCheckpoint")
        assert loader.fields["checkpoint"] == str(checkpoint)
        assert (
            spec_of_type(conversion.workflow, "CLIPVisionEncode").fields["clip_vision"].output
            == "clip_vision"
        )
        if config is not None:
            loader.fields["config"] = str(config)  # tiny: not SD 2.1 unCLIP's sizes
        result = Runner(device="cpu", dtype="fp32").run(conversion.workflow, outputs=["decode_9"])
        return result["decode_9.image"].pixels.numpy()

    from_file = drawn(unclip_files["full"], vision_files["unclip"])
    assert np.abs(from_file - drawn(vision_files["unclip"])).max() <= 1 / 255


def test_ui_format_vision_nodes_name_their_widgets(vision_files, tmp_path: Path) -> None:
    def ui(node_id: int, kind: str, widgets: list, inputs: dict[str, int]) -> dict:
        return {"id": node_id, "type": kind, "inputs": [{"name": k, "link": v} for k, v in inputs.items()],
                "outputs": [], "widgets_values": widgets}  # fmt: skip

    def link(link_id: int, source: list, target: int, slot: int) -> list:
        return [link_id, *source, target, slot, "*"]

    document = {
        "nodes": [
            ui(1, "unCLIPCheckpointLoader", [str(vision_files["unclip"])], {}),
            ui(2, "CLIPTextEncode", ["a red circle"], {"clip": 1}),
            ui(4, "LoadImage", [str(vision_files["picture"]), "image"], {}),
            ui(5, "CLIPVisionEncode", ["none"], {"clip_vision": 2, "image": 3}),
            ui(6, "unCLIPConditioning", [0.7, 0.2], {"conditioning": 4, "clip_vision_output": 5}),
            ui(7, "CLIPVisionLoader", [str(vision_files["encoder_file"])], {}),
            ui(8, "IPAdapterModelLoader", [str(vision_files["sd15-plain"])], {}),
            ui(9, "IPAdapterAdvanced", [0.5, "linear", "concat", 0.2, 0.7, "V only"],
               {"model": 6, "ipadapter": 7, "image": 8, "clip_vision": 9}),
        ],
        "links": [
            link(1, [1, 1], 2, 0), link(2, [1, 3], 5, 0), link(3, [4, 0], 5, 1), link(4, [2, 0], 6, 0),
            link(5, [5, 0], 6, 1), link(6, [1, 0], 9, 0), link(7, [8, 0], 9, 1), link(8, [4, 0], 9, 2),
            link(9, [7, 0], 9, 3),
        ],
    }  # fmt: skip
    path = tmp_path / "vision_ui.json"
    path.write_text(json.dumps(document))
    conversion = convert(read(path), str(path))
    assert spec_of_type(conversion.workflow, "CLIPVisionEncode").fields["crop"] == "none"
    unclip = spec_of_type(conversion.workflow, "unCLIPConditioning").fields
    assert (unclip["strength"], unclip["noise_augmentation"]) == (0.7, 0.2)
    apply = spec_of_type(conversion.workflow, "ApplyIPAdapter").fields
    assert (apply["weight"], apply["start_percent"], apply["end_percent"]) == (0.5, 0.2, 0.7)
    assert spec_of_type(conversion.workflow, "LoadIPAdapter").fields["file"] == str(
        vision_files["sd15-plain"]
    )
