"""Comfy sampling mode against ComfyUI: `sdflow import comfy` of a KSampler workflow draws the picture
ComfyUI's sampling code drew (tests/data/comfy_reference.npz, recorded as
tests/data/README_comfy_reference.md says) within 2 PNG levels, for 11 samplers x 5 schedules,
img2img, CFG 1 and below, and split runs; and against a live ComfyUI where SDFLOW_COMFYUI names one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from sdflow.formats.comfy_json import read
from sdflow.graphs import loads
from sdflow.interop.comfy import convert
from tests import comfy_reference as ref

TOLERANCE = 2  # PNG levels of 255


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One CPU fp32 runner for the module: the checkpoint loads once."""
    from sdflow.runner import Runner

    return Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path_factory.mktemp("outputs")))


@pytest.fixture(scope="module")
def reference() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = np.load(ref.DATA)
    names = [str(name) for name in data["names"]]
    return {name: (data["images"][i], data["latents"][i]) for i, name in enumerate(names)}


def _run(runner, case: ref.Case, folder: Path, reference) -> tuple[np.ndarray, torch.Tensor]:
    if case.kind in ("img2img", "inpaint"):
        ref.write_init(folder, reference[ref.INIT][0])
    workflow = ref.imported(case, folder)
    node = ref.decoded_id(workflow)
    result = runner.run(workflow, outputs=[node])
    return ref.to_uint8(result.tensor(node))[0], result


def test_the_reference_file_holds_every_case(reference):
    assert set(reference) == {case.name for case in ref.CASES}


@pytest.mark.parametrize("case", ref.CASES, ids=lambda case: case.name)
def test_imported_workflows_draw_comfyuis_picture(case, shared, tmp_path, reference):
    picture, _ = _run(shared, case, tmp_path, reference)
    expected = reference[case.name][0]
    difference = np.abs(picture.astype(int) - expected.astype(int)).max()
    assert difference <= TOLERANCE, f"{case.name}: {difference} PNG levels off ComfyUI's picture"


def test_the_importer_writes_comfy_mode_and_yaml_keeps_diffusers(tmp_path):
    workflow = ref.imported(ref.Case("dpmpp_2m_sde", "karras"), tmp_path)
    schedules = [spec for spec in workflow.nodes.values() if spec.type == "Scheduler"]
    assert [spec.fields.get("mode") for spec in schedules] == ["comfy"]
    assert schedules[0].fields["sigmas"] == "karras"
    plain = loads(
        """
version: 1
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: "builtin:shapes"}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: euler, steps: 4}
"""
    )
    assert "mode" not in plain.nodes["schedule"].fields  # the Scheduler's default: diffusers


def test_comfy_mode_differs_from_diffusers_mode(shared, tmp_path, reference):
    """The same imported workflow with the Scheduler set to diffusers mode draws another picture
    (so the grid above tests comfy mode, not a shared path)."""
    case = ref.Case("dpmpp_2m_sde", "karras")
    workflow = ref.imported(case, tmp_path)
    schedule = next(i for i, spec in workflow.nodes.items() if spec.type == "Scheduler")
    workflow.nodes[schedule].fields["mode"] = "diffusers"
    node = ref.decoded_id(workflow)
    picture = ref.to_uint8(shared.run(workflow, outputs=[node]).tensor(node))[0]
    assert np.abs(picture.astype(int) - reference[case.name][0].astype(int)).max() > 10


def test_an_unsupported_sampler_in_comfy_mode_is_located(runner):
    workflow = loads(
        """
version: 1
nodes:
  ckpt: {type: LoadCheckpoint, checkpoint: "builtin:shapes"}
  schedule: {type: Scheduler, model: !link ckpt.model, sampler: deis, steps: 4, mode: comfy}
"""
    )
    with pytest.raises(Exception) as error:
        runner.run(workflow, outputs=["schedule"])
    assert "node 'schedule', field 'sampler': sampler 'deis' has no comfy mode" in str(error.value)


COMFYUI = os.environ.get("SDFLOW_COMFYUI")
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LIVE_PAIRS = (
    ("euler", "normal"),
    ("dpmpp_2m_sde", "karras"),
    ("uni_pc", "sgm_uniform"),
    ("euler_ancestral", "simple"),
)


@pytest.mark.skipif(
    not COMFYUI, reason="set SDFLOW_COMFYUI=DIR (a ComfyUI checkout) to compare with a live ComfyUI"
)
def test_a_live_comfyui_draws_the_same_picture(runner, tmp_path):
    """ComfyUI itself (headless, benchmarks/comfy_worker.py in the venv benchmarks/comfy_venv.sh makes)
    and `sdflow import comfy` of the same txt2img workflow, on the SD1.5-sized random checkpoint of
    benchmarks/peers.py (ComfyUI's own CLIP tokenizer and VAE run there): within 2 PNG levels."""
    sys.path.insert(0, str(BENCHMARKS))
    import comfy_worker
    import peers

    folder, checkpoint = tmp_path / "sd15", tmp_path / "sd15.safetensors"
    peers.write_model(folder)
    peers.write_file(folder, checkpoint)
    made = subprocess.run(
        ["bash", str(BENCHMARKS / "comfy_venv.sh"), COMFYUI], capture_output=True, text=True
    )
    python = made.stdout.strip().splitlines()[-1]
    size, steps, cfg, seed, prompt = 64, 6, 4.0, 42, "a photograph of an astronaut riding a horse"
    jobs = [
        {
            "prompt": prompt,
            "seed": seed,
            "save_to": str(tmp_path / f"{i}.png"),
            "sampler_name": a,
            "scheduler": b,
        }
        for i, (a, b) in enumerate(LIVE_PAIRS)
    ]
    command = [
        python,
        str(BENCHMARKS / "comfy_worker.py"),
        "--comfyui",
        COMFYUI,
        "--checkpoint",
        str(checkpoint),
    ]
    command += ["--size", str(size), "--steps", str(steps), "--cfg", str(cfg), "--threads", "1", "--serve"]
    lines = "".join(json.dumps(job) + "\n" for job in jobs)
    subprocess.run(command, input=lines, text=True, capture_output=True, check=True, timeout=1800)
    for job in jobs:
        document = comfy_worker.workflow(
            str(checkpoint), prompt, seed, size, steps, cfg, job["sampler_name"], job["scheduler"]
        )
        path = tmp_path / "live_api.json"
        path.write_text(json.dumps(document))
        workflow = convert(read(path), str(path)).workflow
        node = ref.decoded_id(workflow)
        ours = ref.to_uint8(runner.run(workflow, outputs=[node]).tensor(node))[0]
        theirs = np.asarray(PILImage.open(job["save_to"]).convert("RGB"))
        difference = np.abs(ours.astype(int) - theirs.astype(int)).max()
        assert difference <= TOLERANCE, (
            f"{job['sampler_name']}/{job['scheduler']}: {difference} levels off ComfyUI"
        )
