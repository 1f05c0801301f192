"""The long-lived runner from Python: outputs as PIL images and tensors, warm caches, clear(), events."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image as PILImage

import sdflow
import sdflow.api
from sdflow.nodes.ops.pixels import to_pil
from sdflow.runner.core import shared

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
STEPS = 4


def _txt2img(prompt: str = "a red circle", seed: int = 3) -> sdflow.Graph:
    """A small txt2img graph without a SaveImage node (outputs stay in memory)."""
    g = sdflow.Graph()
    seed_ = g.input("seed", seed)
    ckpt = g.LoadCheckpoint(id="ckpt")
    positive = g.CLIPEncode(id="positive", clip=ckpt.clip, text=prompt)
    negative = g.CLIPEncode(id="negative", clip=ckpt.clip, text="")
    empty = g.EmptyLatent(id="empty", width=32, height=32)
    schedule = g.Scheduler(id="schedule", model=ckpt.model, sampler="euler", steps=STEPS)
    noised = g.AddNoise(id="noised", latent=empty, schedule=schedule, seed=seed_)
    denoised = g.DenoiseLoop(
        id="denoised", model=ckpt.model, positive=positive, negative=negative, latent=noised, cfg=5.0
    )
    g.VAEDecode(id="decoded", vae=ckpt.vae, latent=denoised)
    return g


@pytest.fixture(scope="module")
def shared_runner(tmp_path_factory: pytest.TempPathFactory) -> sdflow.Runner:
    """One runner for the module, as a notebook would keep one (loads the checkpoint once)."""
    output_dir = tmp_path_factory.mktemp("outputs")
    return sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(output_dir))


# -- results as Python objects ----------------------------------------------------------------------


def test_images_gives_pil_pictures_of_the_decoded_tensor(shared_runner):
    result = shared_runner.run(_txt2img())

    pictures = result.images("decoded")
    assert len(pictures) == 1 and isinstance(pictures[0], PILImage.Image)
    assert pictures[0].size == (32, 32) and pictures[0].mode == "RGB"
    assert list(pictures[0].getdata()) == list(to_pil(result["decoded.image"])[0].getdata())
    assert result.image("decoded").tobytes() == pictures[0].tobytes()


def test_tensor_gives_a_latents_samples_and_an_images_pixels(shared_runner):
    result = shared_runner.run(_txt2img())

    latent = result.tensor("denoised")
    assert latent.shape == (1, 4, 4, 4) and latent is result["denoised"].samples
    assert result.tensor("decoded.image").shape == (1, 3, 32, 32)


def test_builder_handles_index_a_result():
    g = sdflow.Graph()
    empty = g.EmptyLatent(width=16, height=8, batch_size=2)

    result = sdflow.Runner(device="cpu").run(g)

    assert result.tensor(empty.latent).shape == (2, 4, 1, 2)
    assert result[empty] is result[empty.latent]


def test_asking_for_a_node_the_run_did_not_compute_names_what_it_did():
    g = sdflow.Graph()
    g.EmptyLatent(id="empty", width=8, height=8)

    result = sdflow.Runner(device="cpu").run(g)

    with pytest.raises(KeyError, match="no outputs of 'decoded' \\(it computed empty\\)"):
        result["decoded"]


def test_images_refuses_an_output_that_is_not_an_image(shared_runner):
    result = shared_runner.run(_txt2img())

    with pytest.raises(TypeError, match="'denoised' is a Latent, not an Image"):
        result.images("denoised")


# -- caches between runs ----------------------------------------------------------------------------


def test_a_second_run_with_only_the_prompt_changed_reencodes_only_that_prompt(shared_runner):
    shared_runner.run(_txt2img("a red circle"))

    report = shared_runner.run(_txt2img("a blue square")).report

    assert report.status()["ckpt"] == "cached"
    assert set(report.ran()) == {"positive", "denoised", "decoded"}


def test_a_second_run_with_a_new_seed_input_reruns_only_the_noise_and_after(shared_runner):
    graph = _txt2img()
    shared_runner.run(graph, inputs={"seed": 1})

    report = shared_runner.run(graph, inputs={"seed": 2}).report

    assert set(report.ran()) == {"noised", "denoised", "decoded"}


def test_clear_empties_both_caches_and_the_next_run_reloads_the_checkpoint(tmp_path: Path):
    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    runner.run(_txt2img())
    assert len(runner.models) == 1 and runner.models.used > 0
    assert len(runner.outputs) > 0 and runner.outputs.used > 0

    runner.clear()

    assert (len(runner.models), runner.models.used, len(runner.outputs), runner.outputs.used) == (0, 0, 0, 0)
    assert runner.run(_txt2img()).report.status()["ckpt"] == "ran"


def test_the_byte_budgets_are_set_in_the_constructor(tmp_path: Path):
    runner = sdflow.Runner(device="cpu", output_cache_bytes=0, model_cache_bytes=10**9)
    assert (runner.outputs.budget, runner.models.budget) == (0, 10**9)
    graph = sdflow.Graph()
    graph.EmptyLatent(id="empty", width=8, height=8)
    runner.run(graph)

    assert len(runner.outputs) == 0  # nothing fits a zero budget: every run recomputes
    assert runner.run(graph).report.status() == {"empty": "ran"}


def test_the_module_level_run_shares_one_lazily_made_runner(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shared, "_default", None)
    graph = sdflow.Graph()
    graph.EmptyLatent(id="empty", width=8, height=8)

    first = sdflow.run(graph)
    second = sdflow.run(graph)

    assert sdflow.default_runner() is sdflow.default_runner()
    assert (first.report.status(), second.report.status()) == ({"empty": "ran"}, {"empty": "cached"})


def test_a_loaded_yaml_workflow_runs_with_inputs_from_python(shared_runner):
    graph = sdflow.load(EXAMPLES / "txt2img.yaml")
    graph["empty"].set(width=32, height=32)

    result = shared_runner.run(graph, inputs={"steps": 2, "seed": 5})

    assert result.image("decoded").size == (32, 32)
    assert len(result.files) == 1 and Path(result.files[0]).is_file()


# -- events -----------------------------------------------------------------------------------------


def test_a_step_callback_receives_every_denoise_step_with_the_current_latent(tmp_path: Path):
    steps: list[tuple[int, int, torch.Tensor]] = []

    def on_event(event) -> None:
        if isinstance(event, sdflow.StepProgress):
            steps.append((event.index, event.total, event.latent.clone()))

    runner = sdflow.Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path), listeners=[on_event])
    result = runner.run(_txt2img())

    assert [(i, total) for i, total, _ in steps] == [(i, STEPS) for i in range(1, STEPS + 1)]
    assert all(latent.shape == (1, 4, 4, 4) for _, _, latent in steps)
    assert not torch.equal(steps[0][2], steps[-1][2])
    assert torch.equal(steps[-1][2], result.tensor("denoised"))


def test_node_events_start_and_finish_each_node_in_run_order(shared_runner: sdflow.Runner):
    events: list[object] = []
    graph = _txt2img()
    shared_runner.run(graph)
    shared_runner.subscribe(events.append)
    try:
        report = shared_runner.run(graph).report
    finally:
        shared_runner.listeners.remove(events.append)

    order = [n.id for n in report.nodes]
    assert [(type(e).__name__, e.node_id) for e in events] == [
        (kind, node) for node in order for kind in ("NodeStarted", "NodeFinished")
    ]
    assert all(e.status == "cached" for e in events if isinstance(e, sdflow.NodeFinished))
