"""The SD3 / Flux nodes: FluxGuidance (Flux-dev's distilled guidance), ModelSamplingSD3 and
ModelSamplingFlux (the schedule's shift, as diffusers' ``shift`` and dynamic shifting), the located
errors for what these families cannot take, caching, and `sdflow import comfy` of the ComfyUI nodes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, StableDiffusion3Pipeline
from test_comfy_utilities import by_type, converted, node
from workflows import decoded_pixels, max_diff, txt2img

from sdflow.errors import UserError
from sdflow.graphs import loads
from sdflow.runner import Runner

BUILTIN = Path(__file__).resolve().parent.parent / "sdflow" / "builtin"
LEVEL = 1 / 255
PROMPT = "a red circle on a blue background"
STEPS = 3
INPUTS = {"seed": 0, "sampler": "euler", "cfg": 1.0, "steps": STEPS}


def graph(checkpoint: str, **changes) -> str:
    prompts = {"positive": {"text": f'"{PROMPT}"'}, "negative": {"text": '""'}}
    for name, fields in prompts.items():
        changes[name] = {**fields, **changes.get(name, {})}
    return txt2img(INPUTS, flow=True, ckpt={"checkpoint": f'"builtin:{checkpoint}"'}, **changes)


def with_guidance(guidance: float) -> str:
    guided = {"type": "FluxGuidance", "conditioning": "!link positive", "guidance": guidance}
    return graph("tiny-flux", guided=guided, denoised={"positive": "!link guided"})


def with_model(checkpoint: str, patch: dict) -> str:
    patched = {"model": "!link ckpt.model", **patch}
    relinked = {"model": "!link patched"}
    return graph(checkpoint, patched=patched, schedule=relinked, denoised=relinked)


def pipeline_image(cls: type, checkpoint: str, **kwargs) -> np.ndarray:
    pipe = cls.from_pretrained(str(BUILTIN / checkpoint))
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


def test_flux_guidance_is_the_pipelines_guidance_scale_and_changes_the_picture(graph_runner: Runner) -> None:
    ours = decoded_pixels(graph_runner, with_guidance(6.0))
    assert max_diff(ours, pipeline_image(FluxPipeline, "tiny-flux", guidance_scale=6.0)) <= LEVEL
    default = decoded_pixels(graph_runner, graph("tiny-flux"))  # 3.5, diffusers' default
    assert max_diff(ours, default) > 2 * LEVEL
    assert max_diff(default, decoded_pixels(graph_runner, with_guidance(3.5))) == 0.0


def test_model_sampling_sd3_shifts_the_schedule_as_diffusers_shift(graph_runner: Runner) -> None:
    patch = {"type": "ModelSamplingSD3", "shift": 1.5}
    result = graph_runner.run(
        loads(with_model("tiny-sd3", patch), "w.yaml"), inputs=INPUTS, outputs=["schedule"]
    )
    ours = result["schedule.schedule"].make("cpu", (8, 8))
    theirs = FlowMatchEulerDiscreteScheduler(shift=1.5)
    theirs.set_timesteps(STEPS)
    assert torch.equal(ours.sigmas, theirs.sigmas)
    own = FlowMatchEulerDiscreteScheduler(shift=3.0)  # tiny-sd3's own shift
    own.set_timesteps(STEPS)
    assert not torch.equal(ours.sigmas, own.sigmas)
    pixels = decoded_pixels(graph_runner, with_model("tiny-sd3", patch))
    pipe = StableDiffusion3Pipeline.from_pretrained(str(BUILTIN / "tiny-sd3"))
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=1.5)
    reference = pipe(
        PROMPT,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert max_diff(pixels, reference) <= LEVEL


def test_model_sampling_flux_at_the_pictures_size_is_the_dynamic_shift(graph_runner: Runner) -> None:
    patch = {"type": "ModelSamplingFlux", "max_shift": 1.15, "base_shift": 0.5}
    sized = decoded_pixels(graph_runner, with_model("tiny-flux", {**patch, "width": 64, "height": 64}))
    dynamic = decoded_pixels(graph_runner, with_model("tiny-flux", patch))
    plain = decoded_pixels(graph_runner, graph("tiny-flux"))
    assert max_diff(sized, plain) <= LEVEL and max_diff(dynamic, plain) <= LEVEL
    larger = decoded_pixels(graph_runner, with_model("tiny-flux", {**patch, "width": 1024, "height": 1024}))
    assert max_diff(larger, plain) > 2 * LEVEL
    result = graph_runner.run(
        loads(with_model("tiny-flux", {**patch, "width": 1024, "height": 1024}), "w.yaml"),
        inputs=INPUTS,
        outputs=["schedule"],
    )
    assert result["schedule.schedule"].scheduler_config["shift"] == pytest.approx(math.exp(1.15))


def test_sd1_conditioning_into_an_sd3_model_is_refused_before_anything_runs(graph_runner: Runner) -> None:
    text = graph(
        "tiny-sd3",
        sd1={"type": "LoadCheckpoint", "checkpoint": '"builtin:tiny-sd15"'},
        positive={"clip": "!link sd1.clip"},
    )
    with pytest.raises(UserError) as caught:
        graph_runner.run(loads(text, "w.yaml"), inputs=INPUTS)
    message = str(caught.value)
    assert "'positive'" in message and "SD 1.x" in message and "SD3" in message
    assert caught.value.location is not None and caught.value.location.line is not None


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (graph("tiny-flux"), "sampler", "no flow-matching version"),
        (with_model("tiny-sd15", {"type": "ModelSamplingSD3", "shift": 2.0}), "model", "flow-matching"),
        (with_model("tiny-sd3", {"type": "ModelSamplingDiscrete"}), "model", "ModelSamplingSD3"),
        (with_model("tiny-flux", {"type": "TomePatchModel", "ratio": 0.5}), "model", "diffusion transformer"),
        (with_model("tiny-sd3", {"type": "DeepCache"}), "model", "diffusion transformer"),
    ],
)
def test_what_a_family_cannot_take_is_a_located_error(
    graph_runner: Runner, text: str, field: str, words: str
):
    inputs = {**INPUTS, "sampler": "ddim"} if field == "sampler" else INPUTS
    with pytest.raises(UserError) as caught:
        graph_runner.run(loads(text, "w.yaml"), inputs=inputs)
    assert words in str(caught.value) and caught.value.location.field == field


def table_graph(checkpoint: str, source: dict, sampler: str = "euler") -> str:
    """The graph with its schedule from ``source`` (a Sigmas node) through KSamplerSelect + CustomSchedule."""
    return graph(
        checkpoint,
        table=source,
        select={"type": "KSamplerSelect", "sampler_name": sampler},
        custom={
            "type": "CustomSchedule",
            "model": "!link ckpt.model",
            "sampler": "!link select",
            "sigmas": "!link table",
        },
        noised={"schedule": "!link custom"},
    )


def basic(scheduler: str, steps: int = STEPS, **fields) -> dict:
    return {
        "type": "BasicScheduler",
        "model": "!link ckpt.model",
        "scheduler": scheduler,
        "steps": steps,
        **fields,
    }


def comfy_flow_sigmas(name: str, shift: float, steps: int) -> list[float]:
    """ComfyUI's simple / normal / sgm_uniform on a flow model of ``shift``, ending in 0."""
    sigma = lambda t: shift * t / (1 + (shift - 1) * t)  # noqa: E731
    if name == "simple":
        return [*comfy_simple_flow_sigmas(shift, steps), 0.0]
    low = 1000 * sigma(1 / 1000)  # timestep(sigma_min)
    count = steps + 1 if name == "sgm_uniform" else steps
    times = [1000 + (low - 1000) * i / (count - 1) for i in range(count)][:steps]
    return [sigma(t / 1000) for t in times] + [0.0]


@pytest.mark.parametrize("name", ["simple", "normal", "sgm_uniform"])
def test_basic_scheduler_on_a_flow_model_is_comfyuis_table(graph_runner: Runner, name: str) -> None:
    text = table_graph("tiny-sd3", basic(name, 5))
    ours = graph_runner.run(loads(text, "w.yaml"), inputs=INPUTS, outputs=["table"])["table.sigmas"].values
    assert ours.tolist() == pytest.approx(comfy_flow_sigmas(name, 3.0, 5), abs=1e-6)  # tiny-sd3's shift 3


@pytest.mark.parametrize("checkpoint", ["tiny-sd3", "tiny-flux"])
def test_a_basic_scheduler_table_draws_what_the_scheduler_draws(
    graph_runner: Runner, checkpoint: str
) -> None:
    # the table is shifted once (by BasicScheduler), not again by the sampler: SamplerCustomAdvanced's
    # BasicScheduler(simple) + euler is KSampler's euler + simple; Flux's table uses its 1024² shift
    inputs = {**INPUTS, "steps": 4}
    ours = decoded_pixels(graph_runner, table_graph(checkpoint, basic("simple", 4)), inputs)
    changes: dict = {"schedule": {"sigmas": "simple"}}
    if checkpoint == "tiny-flux":  # the Scheduler's shift fixed at 1024² too
        fixed = {"type": "ModelSamplingFlux", "model": "!link ckpt.model", "width": 1024, "height": 1024}
        changes = {"fixed": fixed, "schedule": {"sigmas": "simple", "model": "!link fixed"}}
        changes["denoised"] = {"model": "!link fixed"}
    theirs = decoded_pixels(graph_runner, graph(checkpoint, **changes), inputs)
    assert max_diff(ours, theirs) <= 1e-5
    plain = decoded_pixels(graph_runner, graph(checkpoint), inputs)
    assert checkpoint == "tiny-flux" or max_diff(ours, plain) > 0  # SD3: simple is not the default


@pytest.mark.parametrize(
    ("source", "sampler", "field"),
    [({"type": "KarrasScheduler", "steps": 2}, "euler", "sigmas"), (basic("simple"), "heun", "sampler")],
)
def test_what_a_flow_model_cannot_run_from_a_table_is_a_located_error(
    graph_runner: Runner, source: dict, sampler: str, field: str
) -> None:
    with pytest.raises(UserError) as caught:
        graph_runner.run(loads(table_graph("tiny-flux", source, sampler), "w.yaml"), inputs=INPUTS)
    assert caught.value.location.node == "custom" and caught.value.location.field == field


def test_flux_guidance_on_sd3_conditioning_is_a_located_error(graph_runner: Runner) -> None:
    guided = {"type": "FluxGuidance", "conditioning": "!link positive", "guidance": 2.0}
    text = graph("tiny-sd3", guided=guided, denoised={"positive": "!link guided"})
    with pytest.raises(UserError, match="distilled guidance") as caught:
        graph_runner.run(loads(text, "w.yaml"), inputs=INPUTS)
    assert caught.value.location.field == "conditioning"


def test_a_second_identical_run_recomputes_nothing(tmp_path: Path) -> None:
    runner = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path))
    workflow = loads(with_guidance(2.0), "w.yaml")
    first = runner.run(workflow, inputs=INPUTS)
    assert "denoised" in first.report.ran()
    assert runner.run(workflow, inputs=INPUTS).report.ran() == []
    assert set(runner.run(workflow, inputs={**INPUTS, "seed": 1}).report.ran()) == {
        "noised",
        "denoised",
        "decoded",
    }


def test_comfy_flux_and_sd3_sampling_nodes_import_onto_their_nodes() -> None:
    flux = str(BUILTIN / "tiny-flux")
    graph_json = {
        "1": node("CheckpointLoaderSimple", ckpt_name=flux),
        "2": node("CLIPTextEncode", clip=["1", 1], text="a red circle"),
        "3": node("FluxGuidance", conditioning=["2", 0], guidance=2.5),
        "4": node("ModelSamplingFlux", model=["1", 0], max_shift=1.2, base_shift=0.4, width=512, height=768),
        "5": node("ModelSamplingSD3", model=["4", 0], shift=2.0),
        "6": node("EmptySD3LatentImage", width=64, height=128, batch_size=2),
    }
    workflow, _ = converted(graph_json)
    assert by_type(workflow, "FluxGuidance").fields["guidance"] == 2.5
    assert by_type(workflow, "FluxGuidance").fields["conditioning"].node == by_type(workflow, "CLIPEncode").id
    fields = by_type(workflow, "ModelSamplingFlux").fields
    assert (fields["max_shift"], fields["base_shift"], fields["width"], fields["height"]) == (
        1.2,
        0.4,
        512,
        768,
    )
    assert by_type(workflow, "ModelSamplingSD3").fields["shift"] == 2.0
    empty = by_type(workflow, "EmptyLatent").fields
    assert (empty["width"], empty["height"], empty["batch_size"]) == (64, 128, 2)


def test_model_offload_takes_every_text_encoder_in_turn() -> None:
    from sdflow.models import checkpoints, resolver
    from sdflow.nodes.types import Clip
    from sdflow.runner.devices.accel import Acceleration

    class Offloading(Acceleration):
        def offloads(self, device: torch.device) -> bool:
            return True  # the turn-taking, checked on a CPU-only machine

    loaded = checkpoints.load(resolver.checkpoint("builtin:tiny-sd3"), torch.device("cpu"), torch.float32)
    (tokenizer_2, tokenizer_3), (encoder_2, encoder_3) = loaded.more_tokenizers, loaded.more_text_encoders
    clip = Clip(
        loaded.tokenizer, loaded.text_encoder, loaded.family, tokenizer_2, encoder_2, tokenizer_3, encoder_3
    )
    Offloading(offload="model").apply({"clip": clip}, torch.device("cpu"))
    assert [hasattr(encoder, "sdflow_execution_device") for _, encoder in clip.pairs] == [True] * 3


def test_a_comfy_flux_workflow_with_clip_text_encode_flux_imports_and_runs(tmp_path: Path) -> None:
    graph_json = {
        "1": node("CheckpointLoaderSimple", ckpt_name=str(BUILTIN / "tiny-flux")),
        "2": node(
            "CLIPTextEncodeFlux", clip=["1", 1], clip_l="a red circle", t5xxl="a green square", guidance=2.0
        ),
        "3": node("EmptySD3LatentImage", width=64, height=64, batch_size=1),
        "4": node(
            "KSampler",
            model=["1", 0],
            positive=["2", 0],
            negative=["2", 0],
            latent_image=["3", 0],
            seed=1,
            steps=2,
            cfg=1.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        ),
        "5": node("VAEDecode", samples=["4", 0], vae=["1", 2]),
        "6": node("SaveImage", images=["5", 0], filename_prefix="flux"),
    }
    workflow, text = converted(graph_json)
    encode = by_type(workflow, "CLIPEncode").fields
    assert (encode["text"], encode["t5_text"]) == ("a red circle", "a green square")
    assert by_type(workflow, "FluxGuidance").fields["guidance"] == 2.0
    result = Runner(device="cpu", dtype="fp32", output_dir=str(tmp_path)).run(loads(text, "flux.yaml"))
    assert [Path(p).suffix for p in result.files] == [".png"]


def test_clip_text_encode_sd3_imports_as_clip_encode_with_its_t5_text() -> None:
    graph_json = {
        "1": node("CheckpointLoaderSimple", ckpt_name=str(BUILTIN / "tiny-sd3")),
        "2": node(
            "CLIPTextEncodeSD3",
            clip=["1", 1],
            clip_l="a cat",
            clip_g="a dog",
            t5xxl="a bird",
            empty_padding="none",
        ),
    }
    conversion_workflow, _ = converted(graph_json)
    fields = by_type(conversion_workflow, "CLIPEncode").fields
    assert (fields["text"], fields["clip_g_text"], fields["t5_text"]) == ("a cat", "a dog", "a bird")


def test_sd3_prompts_per_encoder_are_the_pipelines_prompt_2_and_3(graph_runner: Runner) -> None:
    texts = {"clip_g_text": '"a green square"', "t5_text": '"a yellow triangle"'}
    ours = decoded_pixels(graph_runner, graph("tiny-sd3", positive=texts))
    theirs = pipeline_image(
        StableDiffusion3Pipeline,
        "tiny-sd3",
        prompt_2="a green square",
        prompt_3="a yellow triangle",
        guidance_scale=1.0,
    )
    assert max_diff(ours, theirs) <= LEVEL
    only_t5 = decoded_pixels(graph_runner, graph("tiny-sd3", positive={"t5_text": texts["t5_text"]}))
    assert max_diff(ours, only_t5) > 0  # CLIP-G read its own prompt


def comfy_simple_flow_sigmas(shift: float, steps: int) -> list[float]:
    """ComfyUI's `simple` schedule on a flow model, from its 1,000-entry table (ModelSamplingDiscreteFlow:
    sigma(t) = shift t / (1 + (shift - 1) t), t = 1/1000 ... 1), taken every 1000/steps from the end."""
    table = [shift * (t / 1000) / (1 + (shift - 1) * (t / 1000)) for t in range(1, 1001)]
    stride = len(table) / steps
    return [table[-(1 + int(x * stride))] for x in range(steps)]


@pytest.mark.parametrize("steps", [3, 4, 10])
def test_simple_sigmas_on_sd3_are_comfyuis_simple_schedule(graph_runner: Runner, steps: int) -> None:
    text = graph("tiny-sd3", schedule={"sigmas": "simple"})
    inputs = {**INPUTS, "steps": steps}
    result = graph_runner.run(loads(text, "w.yaml"), inputs=inputs, outputs=["schedule"])
    ours = result["schedule.schedule"].make("cpu", (8, 8)).sigmas[:-1]
    theirs = comfy_simple_flow_sigmas(3.0, steps)  # tiny-sd3's shift
    assert ours.tolist() == pytest.approx(theirs, abs=1e-6)
    default = graph_runner.run(loads(graph("tiny-sd3"), "w.yaml"), inputs=inputs, outputs=["schedule"])
    assert not torch.equal(ours, default["schedule.schedule"].make("cpu", (8, 8)).sigmas[:-1])


def test_simple_sigmas_on_flux_are_the_flux_pipelines_schedule(graph_runner: Runner) -> None:
    # diffusers' Flux pipeline passes linspace(1, 1/steps, steps): ComfyUI's `simple` where steps divide
    # 1,000, so the same picture
    text = graph("tiny-flux", schedule={"sigmas": "simple"})
    simple = decoded_pixels(graph_runner, text, {"steps": 4})
    pipe = FluxPipeline.from_pretrained(str(BUILTIN / "tiny-flux"))
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    theirs = pipe(PROMPT, height=64, width=64, num_inference_steps=4, generator=generator, output_type="np")
    assert max_diff(simple, theirs.images) <= LEVEL


def test_a_flow_sampler_without_a_sigma_table_refuses_simple(graph_runner: Runner) -> None:
    text = graph("tiny-sd3", schedule={"sigmas": "simple"})
    with pytest.raises(UserError) as caught:
        graph_runner.run(loads(text, "w.yaml"), inputs={**INPUTS, "sampler": "heun"})
    assert "'simple'" in str(caught.value) and caught.value.location.field == "sigmas"
