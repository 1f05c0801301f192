"""ComfyUI's schedules (Scheduler `sigmas: normal | simple | ...`): each table equals ComfyUI's formulas
re-derived here in float64 numpy, and a run on each equals diffusers' pipeline given the same table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import beta as beta_distribution
from test_parity_txt2img import NEGATIVE, PROMPT, Reference, graph_image

from sdflow.cli import main
from sdflow.nodes.ops.sigma_schedules import SCHEDULES, calculate_sigmas, denoised_sigmas, whole_timesteps
from sdflow.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
CONFIG = json.loads((ROOT / "sdflow/builtin/tiny-sd15/scheduler/scheduler_config.json").read_text())
EXAMPLES = ROOT / "examples"
PNG_LEVEL = 1 / 255
STEPS = 5
SD_SIGMA_MAX, SD_SIGMA_MIN = 14.6146412293, 0.0291671582  # ComfyUI's SD1 table ends (NOISE_LEVELS)
TOLERANCE = 1e-5


def training() -> np.ndarray:
    """SD's training sigmas: betas evenly spaced in sqrt, in float64."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    bar = np.cumprod(1 - betas)
    return np.sqrt((1 - bar) / bar)


def log_sigma_at(t: np.ndarray) -> np.ndarray:
    logs = np.log(training())
    low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
    w = t - np.floor(t)
    return np.exp((1 - w) * logs[low] + w * logs[high])


def reference_table(name: str, n: int) -> np.ndarray:
    """ComfyUI's calculate_sigmas for the SD 1.x schedule, written out again in numpy."""
    s = training()
    lo, hi = s[0], s[-1]
    if name == "normal":
        body = log_sigma_at(np.linspace(999, 0, n))
    elif name == "sgm_uniform":
        body = log_sigma_at(np.linspace(999, 0, n + 1)[:-1])
    elif name == "simple":
        body = np.array([s[-(1 + int(x * len(s) / n))] for x in range(n)])
    elif name == "ddim_uniform":
        body = s[1 :: len(s) // n][::-1]
    elif name == "beta":
        ts = np.rint(beta_distribution.ppf(1 - np.linspace(0, 1, n, endpoint=False), 0.6, 0.6) * 999)
        body = s[np.array(sorted(set(ts.astype(int)), reverse=True))]
    elif name == "karras":
        ramp = np.linspace(0, 1, n)
        body = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    elif name == "exponential":
        body = np.exp(np.linspace(math.log(hi), math.log(lo), n))
    elif name == "kl_optimal":
        ramp = np.arange(n) / (n - 1)
        body = np.tan(ramp * math.atan(lo) + (1 - ramp) * math.atan(hi))
    elif name == "linear_quadratic" and n == 1:
        return np.array([hi, 0.0])
    elif name == "linear_quadratic":
        half = n // 2
        linear = [i * 0.025 / half for i in range(half)]
        gap, rest = half - 0.025 * n, n - half
        a, b = gap / (half * rest**2), 0.025 / half - 2 * gap / rest**2
        quadratic = [a * i * i + b * i + a * half * half for i in range(half, n)]
        return (1 - np.array(linear + quadratic + [1.0])) * hi
    else:  # sd_turbo: timesteps 999, 899, ...
        body = s[999 - 100 * np.arange(min(n, 10))]  # ten rungs at most
    return np.concatenate([body, [0.0]])


def test_the_training_table_ends_where_comfyui_sd1_table_does() -> None:
    table = calculate_sigmas(CONFIG, "karras", 3)
    assert float(table[0]) == pytest.approx(SD_SIGMA_MAX, rel=TOLERANCE)
    assert float(table[-2]) == pytest.approx(SD_SIGMA_MIN, rel=TOLERANCE)


@pytest.mark.parametrize("steps", [1, 2, 5, 20])
@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_equals_comfyui_formula(name: str, steps: int) -> None:
    if name == "kl_optimal" and steps == 1:
        pytest.skip("ComfyUI's kl_optimal divides by steps - 1")
    ours = calculate_sigmas(CONFIG, name, steps).numpy()
    np.testing.assert_allclose(ours, reference_table(name, steps), rtol=TOLERANCE, atol=1e-7)


def test_basic_denoise_keeps_the_tail_of_a_longer_schedule() -> None:
    ours = denoised_sigmas(CONFIG, "normal", 4, 0.5).numpy()
    np.testing.assert_allclose(ours, reference_table("normal", 8)[-5:], rtol=TOLERANCE)


def test_sd_turbo_with_denoise_starts_lower_on_its_ladder() -> None:
    ours = denoised_sigmas(CONFIG, "sd_turbo", 2, 0.5).numpy()
    np.testing.assert_allclose(ours, [training()[499], training()[399], 0.0], rtol=TOLERANCE)


@pytest.fixture(scope="module")
def graph_runner() -> Runner:
    return Runner(device="cpu", dtype="fp32")


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference()


def ours(runner: Runner, sampler: str, name: str) -> np.ndarray:
    return graph_image(
        runner, prompt=PROMPT, negative=NEGATIVE, seed=3, steps=STEPS, cfg=5.0, sampler=sampler, sigmas=name
    )


@pytest.mark.parametrize("name", [s for s in SCHEDULES if s != "karras"])
def test_euler_on_schedule_matches_the_pipeline_given_its_sigmas(
    graph_runner: Runner, reference: Reference, name: str
) -> None:
    table = calculate_sigmas(CONFIG, name, STEPS).tolist()
    theirs = reference.image(
        "euler", 3, prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=5.0, sigmas=table
    )
    assert np.abs(ours(graph_runner, "euler", name) - theirs).max() <= PNG_LEVEL


@pytest.mark.parametrize(
    ("sampler", "name"), [("heun", "simple"), ("dpmpp_2m", "beta"), ("ddpm", "ddim_uniform")]
)
def test_timestep_sampler_on_whole_timestep_schedule_matches_the_pipeline(
    graph_runner: Runner, reference: Reference, sampler: str, name: str
) -> None:
    steps = whole_timesteps(CONFIG, calculate_sigmas(CONFIG, name, STEPS))
    theirs = reference.image(
        sampler, 3, prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=5.0, timesteps=steps
    )
    assert np.abs(ours(graph_runner, sampler, name) - theirs).max() <= PNG_LEVEL


@pytest.mark.parametrize(
    ("sampler", "name", "message"),
    [
        ("euler_ancestral", "simple", "sampler 'euler_ancestral' takes no custom schedule"),
        ("heun", "normal", "sampler 'heun' takes only schedules of whole timesteps"),
    ],
)
def test_schedule_a_sampler_cannot_take_is_refused_up_front(
    sampler: str, name: str, message: str, tmp_path: Path, capsys
) -> None:
    text = (EXAMPLES / "txt2img.yaml").read_text()
    text = text.replace("    steps: !input steps\n", f"    steps: !input steps\n    sigmas: {name}\n", 1)
    workflow = tmp_path / "schedule.yaml"
    workflow.write_text(text)
    argv = ["run", str(workflow), "--set", f"sampler={sampler}", "--quiet", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "schedule.yaml:" in err and "node 'schedule', field 'sigmas'" in err and message in err
    assert "Traceback" not in err and not list(tmp_path.glob("*.png"))


def test_a_schedule_reaches_the_loop(graph_runner: Runner) -> None:
    changed = ours(graph_runner, "euler", "beta") - ours(graph_runner, "euler", "default")
    assert np.abs(changed).max() > PNG_LEVEL
