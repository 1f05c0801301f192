"""SamplerCustom and SamplerCustomAdvanced (RandomNoise / DisableNoise, BasicGuider / CFGGuider /
DualCFGGuider) draw what the equivalent CustomSchedule -> AddNoise -> DenoiseLoop graph draws, and
SplitSigmas' two halves in two samplers equal one run."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from workflows import DROP, TXT2IMG, Fields, changed, render

from sdflow.graphs import loads
from sdflow.nodes.ops import guidance
from sdflow.nodes.types import Conditioning
from sdflow.nodes.types_sampling import Guider
from sdflow.runner import Runner

PNG_LEVEL = 1 / 255
INPUTS: Fields = {
    "prompt": '"a red circle on a blue background"',
    "seed": 4,
    "steps": 4,
    "cfg": 5.0,
    "sampler": "euler",
    "sigmas": "normal",
}
TABLE: dict[str, Fields] = {
    "table": {
        "type": "BasicScheduler",
        "model": "!link ckpt.model",
        "scheduler": "!input sigmas",
        "steps": "!input steps",
    },
    "select": {"type": "KSamplerSelect", "sampler_name": "!input sampler"},
}
# The reference: the table run by CustomSchedule, AddNoise and DenoiseLoop.
REFERENCE = changed(
    {**TXT2IMG, **TABLE},
    {
        "schedule": {
            "type": "CustomSchedule",
            "model": "!link ckpt.model",
            "sampler": "!link select",
            "sigmas": "!link table",
            "sampler_name": DROP,
            "steps": DROP,
        }
    },
)
SAMPLER_CUSTOM: Fields = {
    "type": "SamplerCustom",
    "model": "!link ckpt.model",
    "noise_seed": "!input seed",
    "cfg": "!input cfg",
    "positive": "!link positive",
    "negative": "!link negative",
    "sampler": "!link select",
    "sigmas": "!link table",
    "latent_image": "!link empty",
}
ADVANCED: Fields = {
    "type": "SamplerCustomAdvanced",
    "noise": "!link noise",
    "guider": "!link guider",
    "sampler": "!link select",
    "sigmas": "!link table",
    "latent_image": "!link empty",
}
RANDOM: Fields = {"type": "RandomNoise", "noise_seed": "!input seed"}
CFG_GUIDER: Fields = {
    "type": "CFGGuider",
    "model": "!link ckpt.model",
    "positive": "!link positive",
    "negative": "!link negative",
    "cfg": "!input cfg",
}


@pytest.fixture(scope="module")
def runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


def custom(sampling: dict[str, Fields], output: str = "sampled.latent") -> str:
    """The txt2img graph with its schedule, noise and loop replaced by ``sampling`` (which holds a
    node ``sampled``), decoding ``output``."""
    dropped = {"schedule": DROP, "noised": DROP, "denoised": DROP}
    nodes = changed(TXT2IMG, {**dropped, "decoded": {"latent": f"!link {output}"}, **TABLE, **sampling})
    return render(nodes, INPUTS)


def pixels(runner: Runner, text: str, **inputs: Any) -> torch.Tensor:
    result = runner.run(loads(text, "custom.yaml"), inputs=inputs, outputs=["decoded"])
    return result["decoded.image"].pixels


def reference(runner: Runner, **inputs: Any) -> torch.Tensor:
    return pixels(runner, render(REFERENCE, INPUTS), **inputs)


@pytest.mark.parametrize(("sampler", "sigmas"), [("euler", "normal"), ("heun", "simple")])
def test_sampler_custom_equals_the_custom_schedule_graph(runner: Runner, sampler: str, sigmas: str) -> None:
    ours = pixels(runner, custom({"sampled": SAMPLER_CUSTOM}), sampler=sampler, sigmas=sigmas)
    assert torch.equal(ours, reference(runner, sampler=sampler, sigmas=sigmas))


def test_advanced_with_random_noise_and_cfg_guider_equals_the_graph(runner: Runner) -> None:
    text = custom({"noise": RANDOM, "guider": CFG_GUIDER, "sampled": ADVANCED})
    assert torch.equal(pixels(runner, text), reference(runner))


def test_basic_guider_equals_the_graph_without_guidance(runner: Runner) -> None:
    guider = {"type": "BasicGuider", "model": "!link ckpt.model", "conditioning": "!link positive"}
    text = custom({"noise": RANDOM, "guider": guider, "sampled": ADVANCED})
    ours = pixels(runner, text)
    assert torch.equal(ours, reference(runner, cfg=1.0))
    assert not torch.equal(ours, reference(runner))


def split(second: Fields, **extra: Fields) -> str:
    """The table cut at step 2: SamplerCustom ``high`` (with noise) runs the high half, ``second`` the
    low half from high's output; ``extra`` nodes beside them."""
    cut = {"type": "SplitSigmas", "sigmas": "!link table", "step": 2}
    high = {**SAMPLER_CUSTOM, "sigmas": "!link cut.high"}
    low = {**second, "sigmas": "!link cut.low", "latent_image": "!link high.latent"}
    return custom({**extra, "cut": cut, "high": high, "sampled": low})


def decoding(text: str, output: str) -> str:
    return text.replace("latent: !link sampled.latent", f"latent: !link {output}")


@pytest.mark.parametrize(
    ("second", "extra"),
    [
        ({**SAMPLER_CUSTOM, "add_noise": False}, {}),
        (ADVANCED, {"noise": {"type": "DisableNoise"}, "guider": CFG_GUIDER}),
    ],
    ids=["add_noise_off", "disable_noise"],
)
def test_split_sigmas_halves_continue_as_one_run(runner: Runner, second: Fields, extra: dict) -> None:
    text = split(second, **extra)
    whole = pixels(runner, custom({"sampled": SAMPLER_CUSTOM}))
    assert (pixels(runner, text) - whole).abs().max() <= PNG_LEVEL
    noisy = pixels(runner, decoding(text, "high.latent"))
    assert (noisy - whole).abs().max() > 10 * PNG_LEVEL  # the high half alone is still noisy


def test_denoised_output_of_the_high_half_is_cleaner_than_its_output(runner: Runner) -> None:
    text = split({**SAMPLER_CUSTOM, "add_noise": False})
    whole = pixels(runner, custom({"sampled": SAMPLER_CUSTOM}))
    noisy = pixels(runner, decoding(text, "high.latent"))
    estimate = pixels(runner, decoding(text, "high.denoised"))
    assert (estimate - whole).abs().mean() < (noisy - whole).abs().mean()


def dual(**fields: Any) -> str:
    guider = {
        "type": "DualCFGGuider",
        "model": "!link ckpt.model",
        "cond1": "!link positive",
        "cond2": "!link negative",
        "negative": "!link negative",
        "cfg_conds": 3.0,
        "cfg_cond2_negative": 2.0,
        **fields,
    }
    return custom({"noise": RANDOM, "guider": guider, "sampled": ADVANCED})


def test_dual_cfg_with_cond2_the_negative_is_cfg_by_cfg_conds(runner: Runner) -> None:
    ours = pixels(runner, dual())
    assert (ours - reference(runner, cfg=3.0)).abs().max() <= PNG_LEVEL


def test_dual_cfg_with_cond1_the_cond2_is_cfg_by_cfg_cond2_negative(runner: Runner) -> None:
    ours = pixels(runner, dual(cond2="!link positive"))
    assert (ours - reference(runner, cfg=2.0)).abs().max() <= PNG_LEVEL


def test_nested_dual_cfg_with_cond2_the_negative_multiplies_the_scales(runner: Runner) -> None:
    ours = pixels(runner, dual(style="nested"))
    assert (ours - reference(runner, cfg=6.0)).abs().max() <= PNG_LEVEL


def test_dual_cfg_combines_as_comfyui() -> None:
    """ComfyUI's regular DualCFG: cfg_function(middle, negative, cfg2) + (positive - middle) * cfg1."""
    embeds = torch.zeros(1, 77, 8)
    sides = [Conditioning(embeds) for _ in range(3)]
    guider = Guider(None, sides[2], negative=sides[0], cfg=3.0, middle=sides[1], cfg_negative=2.0)  # type: ignore[arg-type]
    plan = guidance.of(guider)
    assert [side for side, _ in plan.sides] == sides
    negative, middle, positive = (torch.randn(2, 4) for _ in range(3))
    expected = negative + (middle - negative) * 2.0 + (positive - middle) * 3.0
    assert torch.equal(plan.combine([negative, middle, positive]), expected)
    one = guidance.of(Guider(None, sides[2], negative=sides[0], cfg=3.0, middle=sides[1]))  # type: ignore[arg-type]
    assert [side for side, _ in one.sides] == sides[1:]  # cfg_cond2_negative 1: the negative is left out


def test_sampler_custom_equals_the_scheduler_graph_with_the_same_schedule(runner: Runner) -> None:
    plain = render(changed(TXT2IMG, {"schedule": {"sigmas": "!input sigmas"}}), INPUTS)
    assert torch.equal(pixels(runner, custom({"sampled": SAMPLER_CUSTOM})), pixels(runner, plain))
