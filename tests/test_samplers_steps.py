"""Every sampler runs for every step count the Scheduler node accepts (diffusers' schedulers have
edge cases at both ends: PNDM's warm-up below 4 steps, indexing and division near 1000)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sdflow
from sdflow.cli import main
from sdflow.nodes.fields import MAX_STEPS
from sdflow.nodes.ops.samplers import SAMPLERS, karras_samplers, scheduler_for, step_limit
from sdflow.nodes.ops.schedule_window import start_index

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = ["tiny-sd15", "shapes"]  # a PNDM scheduler config and a DDIM one
# Every sampler with the sigmas it takes: its own spacing, and Karras sigmas where it has them.
SPACINGS = [(s, "default") for s in sorted(SAMPLERS)] + [(s, "karras") for s in karras_samplers()]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize(("sampler", "sigmas"), SPACINGS)
def test_the_largest_and_smallest_step_counts_stay_finite(sampler: str, sigmas: str, config: str) -> None:
    base = json.loads((BUILTIN / config / "scheduler" / "scheduler_config.json").read_text())
    cls, settings = scheduler_for(sampler, base, sigmas)
    for steps in (1, 2, 3, step_limit(sampler, MAX_STEPS)):
        for strength in (1.0, 0.3):
            scheduler = cls.from_config(settings)
            scheduler.set_timesteps(steps)
            first = start_index(steps, strength, scheduler.order)
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(first)
            generator = torch.Generator().manual_seed(0)
            x = torch.randn(1, 4, 4, 4, generator=generator)
            kwargs = {"generator": generator} if sampler in ("ddpm", "euler_ancestral") else {}
            for t in scheduler.timesteps[first:]:
                model_input = scheduler.scale_model_input(x, t)
                x = scheduler.step(0.1 * model_input, t, x, return_dict=False, **kwargs)[0]
            assert torch.isfinite(x).all(), (sampler, steps, strength)


@pytest.mark.parametrize(("sampler", "sigmas"), SPACINGS)
def test_txt2img_and_img2img_run_with_one_to_four_steps(sampler: str, sigmas: str, runner) -> None:
    for name in ("txt2img.yaml", "img2img.yaml"):
        graph = sdflow.load(EXAMPLES / name)
        graph["ckpt"]["checkpoint"] = "builtin:tiny-sd15"
        graph["schedule"]["sigmas"] = sigmas
        for steps in (1, 2, 3, 4):
            result = runner.run(graph, inputs={"sampler": sampler, "steps": steps}, outputs=["decoded"])
            pixels = result.tensor("decoded")
            assert torch.isfinite(pixels).all() and pixels.shape[-1] == 64, (name, steps)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_the_cli_runs_the_example_with_every_sampler(sampler: str, tmp_path: Path) -> None:
    argv = ["run", str(EXAMPLES / "txt2img.yaml"), "--set", f"sampler={sampler}", "--set", "steps=3"]
    assert main([*argv, "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_more_steps_than_the_schedulers_support_are_refused_up_front(tmp_path: Path, capsys) -> None:
    argv = ["run", str(EXAMPLES / "txt2img.yaml"), "--set", f"steps={MAX_STEPS + 1}", "--quiet"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "txt2img.yaml:" in err and "node 'schedule', field 'steps'" in err
    assert f"less than or equal to {MAX_STEPS}" in err
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - set(karras_samplers()) - {"dpmpp_2m_karras"}))
def test_karras_sigmas_on_a_sampler_without_them_are_refused_up_front(
    sampler: str, tmp_path: Path, capsys
) -> None:
    text = (EXAMPLES / "txt2img.yaml").read_text()
    text = text.replace("    steps: !input steps\n", "    steps: !input steps\n    sigmas: karras\n", 1)
    workflow = tmp_path / "karras.yaml"
    workflow.write_text(text)
    argv = ["run", str(workflow), "--set", f"sampler={sampler}", "--quiet", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "karras.yaml:" in err and "node 'schedule', field 'sigmas'" in err
    assert f"sampler '{sampler}' has no Karras sigmas: use one of {', '.join(karras_samplers())}" in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.png"))
