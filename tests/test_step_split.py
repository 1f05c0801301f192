"""Stopping a DenoiseLoop after a step (end_step) and continuing with AddNoise (start_step), as
ComfyUI's two KSamplerAdvanced passes do: for a deterministic sampler the split equals one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from workflows import DROP, LOOP, txt2img

import sdflow
from sdflow.errors import NodeError, UserError
from sdflow.graphs import loads
from sdflow.runner import Runner

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

WORKFLOW = txt2img(
    {"sampler": "euler", "seed": 3},
    flow=True,
    positive={"text": "a red circle"},
    schedule={"steps": 4},
    denoised=DROP,
    decoded=DROP,
    whole={**LOOP, "cfg": 5.0},
    first={**LOOP, "cfg": 5.0, "end_step": 2},
    resumed={
        "type": "AddNoise",
        "latent": "!link first",
        "schedule": "!link schedule",
        "seed": 9,
        "start_step": 2,
    },
    second={**LOOP, "latent": "!link resumed", "cfg": 5.0},
)


def run(runner: Runner, text: str = WORKFLOW, **inputs: Any):
    return runner.run(loads(text, "split.yaml"), inputs=inputs)


@pytest.mark.parametrize("sampler", ["euler", "ddim", "heun"])
def test_two_passes_split_at_a_step_equal_one_full_run_bit_for_bit(
    graph_runner: Runner, sampler: str
) -> None:
    result = run(graph_runner, sampler=sampler)
    whole, first = result["whole.latent"], result["first.latent"]
    assert first.cut.index == 2 and not first.cut.clean and whole.cut is None
    assert not torch.equal(first.samples, whole.samples)  # still noisy halfway
    assert torch.equal(result["second.latent"].samples, whole.samples)


def test_start_step_null_resumes_where_the_loop_stopped(graph_runner: Runner) -> None:
    text = WORKFLOW.replace(", start_step: 2}", "}")
    result = run(graph_runner, text)
    assert torch.equal(result["second.latent"].samples, result["whole.latent"].samples)


def test_start_step_on_a_fresh_latent_noises_it_to_that_step(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("seed: !input seed}", "seed: !input seed, start_step: 1}")
    noised = run(graph_runner, text)["noised.latent"]
    assert noised.noise.start_index == 1
    # an empty latent noised to step 1 is the noise times that step's sigma (Euler's add_noise)
    scheduler = noised.noise.schedule.make("cpu")
    assert torch.allclose(noised.samples, noised.noise.noise * scheduler.sigmas[1])


def test_a_stopped_latent_must_pass_through_add_noise(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("latent: !link resumed, cfg: 5.0}", "latent: !link first, cfg: 5.0}")
    with pytest.raises(NodeError, match=r"stopped after step 2 \(end_at\): pass it through AddNoise"):
        run(graph_runner, text)


def test_an_end_step_not_after_the_start_is_a_located_error(graph_runner: Runner) -> None:
    text = WORKFLOW.replace(
        "latent: !link resumed, cfg: 5.0}", "latent: !link resumed, cfg: 5.0, end_step: 2}"
    )
    with pytest.raises(NodeError, match="end_step 2 is not after the step this latent starts at") as caught:
        run(graph_runner, text)
    assert "second" in str(caught.value) and "end_step" in str(caught.value)


def test_steps_and_fractions_together_are_refused_up_front(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("end_step: 2}", "end_step: 2, denoise_end: 0.5}")
    with pytest.raises(UserError, match=r"give one of end_step, denoise_end: they name the same point"):
        run(graph_runner, text)
    text = WORKFLOW.replace("start_step: 2}", "start_step: 2, denoise_start: 0.5}")
    with pytest.raises(UserError, match=r"give one of start_step, denoise_start: they name the"):
        run(graph_runner, text)


@pytest.mark.parametrize("checkpoint", ["builtin:tiny-sd15", "builtin:tiny-sd15-inpaint"])
def test_an_inpainting_split_equals_one_run(runner, checkpoint: str) -> None:
    """A 4-channel model blends with the original re-noised to the next step of the whole schedule,
    also at the end of the first pass; a 9-channel model reads the mask in both passes."""
    graph = sdflow.load(EXAMPLES / "inpaint.yaml")
    graph["ckpt"]["checkpoint"] = checkpoint
    loop = graph["denoised"]
    shared = {f: loop[f] for f in ("model", "positive", "negative", "cfg")}
    first = graph.add("DenoiseLoop", id="first", **shared, latent=graph["noised"], end_step=2)
    resumed = graph.add("AddNoise", id="resumed", latent=first, schedule=graph["schedule"], seed=1)
    graph.add("DenoiseLoop", id="second", **shared, latent=resumed)
    result = runner.run(graph, inputs={"steps": 4, "sampler": "euler"}, outputs=["denoised", "second"])
    assert torch.equal(result["second.latent"].samples, result["denoised.latent"].samples)


def test_end_at_and_start_at_as_steps_draw_what_their_aliases_draw(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("end_step: 2}", "end_at: 2}").replace("start_step: 2}", "start_at: 2}")
    renamed, aliased = run(graph_runner, text), run(graph_runner)
    assert renamed["first.latent"].cut == aliased["first.latent"].cut
    assert torch.equal(renamed["second.latent"].samples, aliased["second.latent"].samples)


def test_end_at_as_a_fraction_cuts_clean_as_denoise_end_does(graph_runner: Runner) -> None:
    fraction = WORKFLOW.replace("end_step: 2}", "end_at: 0.5}").replace(", start_step: 2}", "}")
    alias = WORKFLOW.replace("end_step: 2}", "denoise_end: 0.5}").replace(", start_step: 2}", "}")
    renamed, aliased = run(graph_runner, fraction), run(graph_runner, alias)
    assert renamed["first.latent"].cut == aliased["first.latent"].cut
    assert renamed["first.latent"].cut.clean and renamed["first.latent"].cut.fraction == 0.5
    assert torch.equal(renamed["second.latent"].samples, aliased["second.latent"].samples)


def test_start_at_as_a_fraction_resumes_as_denoise_start_does(graph_runner: Runner) -> None:
    fraction = WORKFLOW.replace("start_step: 2}", "start_at: 0.5}")
    alias = WORKFLOW.replace("start_step: 2}", "denoise_start: 0.5}")
    renamed, aliased = run(graph_runner, fraction), run(graph_runner, alias)
    assert renamed["resumed.latent"].noise.start_index == aliased["resumed.latent"].noise.start_index
    assert torch.equal(renamed["second.latent"].samples, aliased["second.latent"].samples)


def test_a_point_and_its_alias_together_are_refused_with_the_field_named(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("end_step: 2}", "end_step: 2, end_at: 2}")
    with pytest.raises(UserError, match="give one of end_at, end_step") as caught:
        run(graph_runner, text)
    assert "first" in str(caught.value) and "end_step" in str(caught.value)


@pytest.mark.parametrize(("point", "cut"), [(2, (2, None)), (0.5, (None, 0.5))])
def test_end_at_takes_a_workflow_input_of_either_kind(graph_runner: Runner, point, cut) -> None:
    text = WORKFLOW.replace("  seed: 3\n", f"  seed: 3\n  point: {point}\n").replace(
        "end_step: 2}", "end_at: !input point}"
    )
    stopped = run(graph_runner, text)["first.latent"].cut
    index, fraction = cut
    assert stopped.fraction == fraction and (index is None or stopped.index == index)


def test_a_text_input_for_end_at_names_both_kinds_it_takes(graph_runner: Runner) -> None:
    text = WORKFLOW.replace("  seed: 3\n", "  seed: 3\n  point: half\n").replace(
        "end_step: 2}", "end_at: !input point}"
    )
    with pytest.raises(UserError, match=r"expects int \| float \| None") as caught:
        run(graph_runner, text)
    assert "split.yaml" in str(caught.value) and "first" in str(caught.value)
