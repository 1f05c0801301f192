"""`sdflow import comfy` reports every problem of a workflow at once: unsupported node types first
(with their node ids), then each refused setting of each node, one problem per line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdflow.cli import main
from sdflow.formats.comfy_json import read
from sdflow.interop.comfy import ConversionError, convert

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"


def txt2img(**changes: dict) -> dict:
    """The txt2img API-format fixture with node inputs changed (or nodes added: a dict with class_type)."""
    document = json.loads((FIXTURES / "txt2img_api.json").read_text())
    for node_id, change in changes.items():
        if "class_type" in change:
            document[node_id] = change
        else:
            document[node_id]["inputs"].update(change)
    return document


def problems(tmp_path: Path, document: dict) -> list[str]:
    """The problems a conversion reports, without the file name each starts with."""
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConversionError) as caught:
        convert(read(path), str(path))
    return [error.message for error in caught.value.errors]


def command_errors(tmp_path: Path, document: dict, capsys: pytest.CaptureFixture[str]) -> list[str]:
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    assert main(["import", "comfy", str(path), "-o", str(tmp_path / "w.yaml")]) == 2
    assert not (tmp_path / "w.yaml").exists()
    return capsys.readouterr().err.splitlines()


CUSTOM = {
    "20": {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}},
    "21": {"class_type": "WildcardEncode", "inputs": {"clip": ["4", 1]}},
    "22": {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}},
}


def test_unsupported_types_come_first_one_line_each_with_their_node_ids(tmp_path):
    found = problems(tmp_path, txt2img(**CUSTOM))
    assert found == [
        "unsupported ComfyUI node FaceDetailer (nodes 20, 22)",
        "unsupported ComfyUI node WildcardEncode (node 21)",
    ]


def test_refused_settings_are_checked_even_when_some_node_types_are_unknown(tmp_path):
    found = problems(tmp_path, txt2img(**CUSTOM, **{"3": {"scheduler": "align_your_steps"}}))
    assert found[:2] == [
        "unsupported ComfyUI node FaceDetailer (nodes 20, 22)",
        "unsupported ComfyUI node WildcardEncode (node 21)",
    ]
    assert found[2:] == [
        "node 3 (KSampler): unknown scheduler 'align_your_steps' (sdflow maps: "
        "normal, karras, exponential, sgm_uniform, simple, "
        "ddim_uniform, beta, linear_quadratic, kl_optimal)"
    ]


def test_every_problem_of_one_node_is_reported(tmp_path):
    found = problems(
        tmp_path,
        txt2img(**{"3": {"sampler_name": "restart", "scheduler": "ays", "denoise": 1.5, "cfg": "x"}}),
    )
    topics = sorted(line.split(": ")[1].split(" ")[1] for line in found)
    assert topics == ["'cfg'", "must", "sampler_name", "scheduler"]
    assert all(line.startswith("node 3 (KSampler): ") for line in found)
    assert "node 3 (KSampler): input 'cfg' must be a number, got 'x'" in found


def test_nodes_fed_by_an_unconvertible_node_add_no_lines_of_their_own(tmp_path):
    """The KSampler's latent comes from an unknown node and the VAEDecode from a refused KSampler:
    neither says it 'uses output 0 of node N, which has none'."""
    document = txt2img(
        **{"5": {"class_type": "CustomLatent", "inputs": {}}, "4": {"ckpt_name": ["99", 0]}},
        **{"99": {"class_type": "PrimitiveNodeOfSomeKind", "inputs": {}}},
    )
    found = problems(tmp_path, document)
    assert found == [
        "unsupported ComfyUI node CustomLatent (node 5)",
        "unsupported ComfyUI node PrimitiveNodeOfSomeKind (node 99)",
        "node 4 (CheckpointLoaderSimple): input 'ckpt_name' comes from node 99; sdflow needs a constant here",
    ]


def test_the_command_prints_one_problem_per_line(tmp_path, capsys):
    lines = command_errors(tmp_path, txt2img(**CUSTOM, **{"3": {"sampler_name": "restart"}}), capsys)
    assert len(lines) == 3
    assert all(line.startswith(f"error: {tmp_path / 'w.json'}: ") for line in lines)
    assert not any("\\n" in line for line in lines)
    assert lines[0].endswith("unsupported ComfyUI node FaceDetailer (nodes 20, 22)")
    assert lines[2].endswith(
        "node 3 (KSampler): unknown sampler_name 'restart' (sdflow maps: euler, euler_ancestral, heun, "
        "dpmpp_2m, ddim, ddpm, uni_pc, lms, uni_pc_bh2, dpmpp_2m_sde, dpmpp_2m_sde_gpu, dpmpp_3m_sde, "
        "dpmpp_3m_sde_gpu, dpmpp_sde, dpmpp_sde_gpu, dpm_2, dpm_2_ancestral, deis, lcm)"
    )


def test_the_supported_node_list_is_not_printed(tmp_path, capsys):
    lines = command_errors(tmp_path, txt2img(**CUSTOM), capsys)
    assert not any("CheckpointLoaderSimple" in line for line in lines)


def test_settings_that_fail_validation_are_listed_one_per_line_with_node_and_field(tmp_path, capsys):
    lines = command_errors(tmp_path, txt2img(**{"3": {"cfg": 150.0}, "5": {"width": 4}}), capsys)
    source = tmp_path / "w.json"
    assert lines[0] == f"error: {source}: the converted workflow does not validate (nothing written):"
    assert any(line.startswith(f"error: {source}: node 'sample_3', field 'cfg': ") for line in lines[1:])
    assert any(line.startswith(f"error: {source}: node 'empty_5', field 'width': ") for line in lines[1:])


@pytest.mark.parametrize("kind", ["workflow>Upscale group", "workflow/Upscale group"])
def test_group_nodes_get_the_hint_to_export_the_api_format(tmp_path, kind):
    document = json.loads((FIXTURES / "txt2img_ui.json").read_text())
    document["nodes"].append({"id": 20, "type": kind, "mode": 0, "inputs": [], "outputs": []})
    found = problems(tmp_path, document)
    assert found == [
        f"unsupported ComfyUI node {kind} (node 20)",
        "subgraphs and group nodes: export the API format, where ComfyUI flattens them",
    ]
