"""ComfyUI's custom sampling nodes import onto sdflow's own (UI and API formats alike), with every
sampler and scheduler name sdflow supports; an imported split workflow runs as one uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sdflow.formats.comfy_json import read
from sdflow.graphs.model import InputRef, Link
from sdflow.interop.comfy import ConversionError, convert
from sdflow.interop.comfy.handlers_sampling import SAMPLERS, SCHEDULERS
from sdflow.nodes.library.basic_scheduler import ScheduleName
from sdflow.nodes.ops.samplers import SAMPLERS as SDFLOW_SAMPLERS
from sdflow.nodes.ops.sigma_schedules import SCHEDULES

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"
PNG_LEVEL = 1 / 255


def imported(path: Path):
    return convert(read(path), str(path))


def api(tmp_path: Path, change: Any = None) -> Path:
    """The custom sampling fixture (API format), changed by ``change(document)``, on the tiny model."""
    document = json.loads((FIXTURES / "custom_sampling_api.json").read_text())
    document["1"]["inputs"]["ckpt_name"] = "builtin:tiny-sd15"
    document["4"]["inputs"].update(width=64, height=64)
    document["6"]["inputs"]["steps"] = 4
    document["7"]["inputs"]["step"] = 2
    if change:
        change(document)
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(document))
    return path


def test_the_api_and_ui_formats_import_the_same():
    ui = imported(FIXTURES / "custom_sampling_ui.json").workflow
    assert imported(FIXTURES / "custom_sampling_api.json").workflow.structure() == ui.structure()


def test_custom_sampling_nodes_map_onto_sdflows_with_comfyuis_settings():
    workflow = imported(FIXTURES / "custom_sampling_ui.json").workflow
    nodes = {spec.type: spec.fields for spec in workflow.nodes.values()}
    assert nodes["BasicScheduler"] == {
        "model": Link("checkpoint_1", "model"), "steps": 20, "denoise": 1.0, "scheduler": "normal"
    }  # fmt: skip
    assert nodes["SplitSigmas"]["step"] == 10
    assert nodes["SamplerCustomAdvanced"]["sigmas"] == Link("splitsigmas_7", "high")
    assert nodes["SamplerCustom"]["sigmas"] == Link("splitsigmas_7", "low")
    assert nodes["SamplerCustom"]["latent_image"] == Link("samplercustomadvanced_10", "latent")
    assert nodes["SamplerCustom"]["add_noise"] is False and nodes["SamplerCustom"]["cfg"] == 7.5
    assert nodes["CFGGuider"]["cfg"] == 7.5
    assert nodes["RandomNoise"]["noise_seed"] == InputRef("seed_randomnoise_8")
    assert workflow.inputs["seed_randomnoise_8"].default == 42
    assert nodes["VAEDecode"]["latent"] == Link("samplercustom_12", "latent")


def test_an_imported_split_runs_as_one_uninterrupted_run(tmp_path, runner):
    def whole(document: dict) -> None:  # one SamplerCustom over the whole table
        document["12"]["inputs"].update(add_noise=True, sigmas=["6", 0], latent_image=["4", 0])

    split = runner.run(imported(api(tmp_path)).workflow, outputs=["decode_13"])["decode_13"]
    one = runner.run(imported(api(tmp_path, whole)).workflow, outputs=["decode_13"])["decode_13"]
    assert (split.pixels - one.pixels).abs().max() <= PNG_LEVEL


def test_the_guiders_schedulers_and_noises_import_and_run(tmp_path, runner):
    def others(document: dict) -> None:
        def node(kind: str, **inputs: Any) -> dict:
            return {"class_type": kind, "inputs": inputs}

        model, positive, negative = ["1", 0], ["2", 0], ["3", 0]
        document["9"] = node(
            "DualCFGGuider", model=model, cond1=positive, cond2=negative, negative=negative,
            cfg_conds=4.0, cfg_cond2_negative=2.0, style="nested",
        )  # fmt: skip
        document["6"] = node("KarrasScheduler", steps=4, sigma_max=14.6, sigma_min=0.03, rho=7.0)
        document["15"] = node("ExponentialScheduler", steps=3, sigma_max=10.0, sigma_min=0.1)
        document["16"] = node("SDTurboScheduler", model=model, steps=2, denoise=1.0)
        document["17"] = node("BasicGuider", model=model, conditioning=positive)
        sampled = {"noise": ["8", 0], "guider": ["17", 0], "sampler": ["5", 0], "latent_image": ["4", 0]}
        document["18"] = node("SamplerCustomAdvanced", **sampled, sigmas=["16", 0])
        document["19"] = node("SamplerCustomAdvanced", **sampled, sigmas=["15", 0])
        document["20"] = node("VAEDecode", samples=["18", 1], vae=["1", 2])
        document["21"] = node("VAEDecode", samples=["19", 0], vae=["1", 2])

    workflow = imported(api(tmp_path, others)).workflow
    nodes = {spec.type: spec.fields for spec in workflow.nodes.values()}
    assert nodes["DualCFGGuider"]["style"] == "nested" and nodes["DualCFGGuider"]["cfg_conds"] == 4.0
    assert nodes["KarrasScheduler"]["rho"] == 7.0 and nodes["SDTurboScheduler"]["steps"] == 2
    assert workflow.nodes["decode_20"].fields["latent"] == Link("samplercustomadvanced_18", "denoised")
    result = runner.run(workflow, outputs=["decode_13", "decode_20", "decode_21"])
    assert all(torch.isfinite(result[n].pixels).all() for n in ("decode_13", "decode_20", "decode_21"))


def test_every_sdflow_sampler_and_comfyui_schedule_has_a_comfyui_name():
    assert set(SAMPLERS.values()) >= set(SDFLOW_SAMPLERS) - {"pndm", "dpmpp_2m_karras", "dpmpp_2s", "tcd"}
    assert set(SCHEDULERS) == set(SCHEDULES) - {"sd_turbo"}  # sd_turbo is the SDTurboScheduler node
    assert set(SCHEDULERS) == set(ScheduleName.__args__)


@pytest.mark.parametrize("scheduler", ["exponential", "sgm_uniform", "kl_optimal", "linear_quadratic"])
def test_ksampler_schedules_become_the_schedulers_comfyui_sigmas(tmp_path, scheduler):
    document = json.loads((FIXTURES / "txt2img_api.json").read_text())
    document["3"]["inputs"]["scheduler"] = scheduler
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    assert imported(path).workflow.nodes["schedule_3"].fields["sigmas"] == scheduler


def test_a_ksampler_schedule_its_sampler_cannot_run_is_refused(tmp_path):
    document = json.loads((FIXTURES / "txt2img_api.json").read_text())
    document["3"]["inputs"].update(sampler_name="deis", scheduler="exponential")  # diffusers mode
    path = tmp_path / "w.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ConversionError) as caught:
        imported(path)
    assert "scheduler 'exponential': sampler 'deis' takes no custom schedule" in str(caught.value)


def test_unknown_custom_sampling_names_are_refused_naming_the_choices(tmp_path):
    def wrong(document: dict) -> None:
        document["5"]["inputs"]["sampler_name"] = "dpm_fast"
        document["6"]["inputs"]["scheduler"] = "align_your_steps"

    with pytest.raises(ConversionError) as caught:
        imported(api(tmp_path, wrong))
    messages = [e.message for e in caught.value.errors]
    assert any("node 5 (KSamplerSelect): unknown sampler_name 'dpm_fast'" in m for m in messages)
    assert any("node 6 (BasicScheduler): unknown scheduler 'align_your_steps'" in m for m in messages)
