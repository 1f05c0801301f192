"""The `sdflow` command's lean imports (sdflow.lean): peft kept out, scipy and requests put off until
used, transformers' model index kept between runs, and only the node modules a workflow uses
imported. The pictures are the same as a full process's, LoRA and the samplers needing scipy too."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from sdflow import transformers_index
from sdflow.cli import main
from sdflow.nodes import registry
from sdflow.runner.devices import dtypes

ROOT = Path(__file__).resolve().parent.parent

WORKFLOW = """
version: 1
nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: builtin:tiny-sd15}}
  lora: {{type: LoadLoRA, model: !link ckpt.model, clip: !link ckpt.clip, file: "{kohya}",
         strength_model: 0.8, strength_clip: 0.5}}
  lora2: {{type: LoadLoRA, model: !link lora.model, clip: !link lora.clip, file: "{peft}",
          strength_model: 0.6, strength_clip: 0.7}}
  positive: {{type: CLIPEncode, clip: !link lora2.clip, text: "a red circle"}}
  negative: {{type: CLIPEncode, clip: !link lora2.clip, text: "blurry"}}
  empty: {{type: EmptyLatent, width: 64, height: 64}}
  lms: {{type: Scheduler, model: !link lora2.model, sampler: lms, steps: 4}}
  beta: {{type: Scheduler, model: !link lora2.model, sampler: euler, sigmas: beta, steps: 4}}
  noised_lms: {{type: AddNoise, latent: !link empty, schedule: !link lms, seed: 4}}
  noised_beta: {{type: AddNoise, latent: !link empty, schedule: !link beta, seed: 4}}
  denoised_lms: {{type: DenoiseLoop, model: !link lora2.model, positive: !link positive,
                 negative: !link negative, latent: !link noised_lms, cfg: 5.0}}
  denoised_beta: {{type: DenoiseLoop, model: !link lora2.model, positive: !link positive,
                  negative: !link negative, latent: !link noised_beta, cfg: 5.0}}
  decoded_lms: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised_lms}}
  decoded_beta: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised_beta}}
  save_lms: {{type: SaveImage, image: !link decoded_lms, filename_prefix: lms}}
  save_beta: {{type: SaveImage, image: !link decoded_beta, filename_prefix: beta}}
"""

# As the `sdflow` command does (lean imports, then main): runs the shipped example and reports on the
# modules, then runs the workflow that needs scipy.
LEAN_RUN = """
import gc, json, sys
from sdflow import lean
lean.enable()
assert not gc.isenabled()
from sdflow.cli.main import main
code = main(["run", "examples/txt2img.yaml", "--output-dir", sys.argv[2], "--quiet"])
facts = {
    "code": code,
    "peft": repr(sys.modules.get("peft", "absent")),
    "loaded": sorted(m for m in ("numpy.ma", "scipy.optimize", "urllib3") if m in sys.modules),
    "library": sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("sdflow.nodes.library.")),
    "stats_put_off": type(sys.modules.get("scipy.stats")).__name__,
    "gc": [gc.isenabled(), gc.get_freeze_count() > 0],
}
import scipy.stats
facts["beta_median"] = float(scipy.stats.beta.ppf(0.5, 2.0, 2.0))
facts["stats_real"] = type(sys.modules["scipy.stats"]).__name__
import inspect
import torch._library.utils as torch_utils
def named():
    return [torch_utils.get_source(1), "%s:%d" % inspect.getframeinfo(sys._getframe(0))[:2]]
facts["source"] = named()
facts["code_scipy"] = main(["run", sys.argv[1], "--output-dir", sys.argv[2], "--quiet"])
from sdflow.nodes import registry
facts["catalogue"] = len(registry.all_types())
print(json.dumps(facts))
"""


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "XDG_CACHE_HOME": str(tmp_path),
        **extra,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tool) -> dict[str, object]:
    """The workflow (two LoRA formats, the lms sampler and beta sigmas: scipy at run time) drawn by a
    lean process and by this one."""
    folder = tmp_path_factory.mktemp("lean")
    pipe = StableDiffusionPipeline.from_pretrained(str(ROOT / "sdflow" / "builtin" / "tiny-sd15"))
    make = tool("make_tiny_loras.py")
    kohya = make.write_kohya(folder / "kohya.safetensors", pipe.unet, pipe.text_encoder, 4, 0)
    (folder / "peft").mkdir()
    peft = make.write_peft(folder / "peft", pipe.unet, pipe.text_encoder, 4, 1)
    workflow = folder / "lean.yaml"
    workflow.write_text(WORKFLOW.format(kohya=kohya, peft=peft))
    lean, full = folder / "lean-out", folder / "full-out"
    done = subprocess.run(
        [sys.executable, "-c", LEAN_RUN, str(workflow), str(lean)],
        cwd=ROOT,
        env=_env(folder),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert main(["run", str(workflow), "--output-dir", str(full), "--quiet"]) == 0
    return {"facts": json.loads(done.stdout.splitlines()[-1]), "lean": lean, "full": full, "cache": folder}


def _pixels(folder: Path, prefix: str) -> np.ndarray:
    (path,) = folder.glob(f"{prefix}_*.png")
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("prefix", ["lms", "beta"])
def test_a_lean_run_draws_the_full_process_pictures(runs, prefix) -> None:
    assert runs["facts"]["code_scipy"] == 0
    assert np.array_equal(_pixels(runs["lean"], prefix), _pixels(runs["full"], prefix))


def test_a_lean_process_sees_no_peft_and_loads_no_unused_scipy_or_requests(runs) -> None:
    facts = runs["facts"]  # after the shipped example, which needs none of them
    assert facts["code"] == 0
    assert facts["peft"] == "None"  # the import machinery's "not installed"
    assert facts["loaded"] == []
    assert facts["stats_put_off"] == "_Deferred"  # imported by diffusers, never read by this workflow


def test_the_garbage_collector_paused_for_the_imports_goes_on_for_the_run(runs) -> None:
    assert runs["facts"]["gc"] == [True, True]  # enabled again, the imported objects frozen


def test_torch_names_a_registering_line_as_its_own_get_source_does(runs) -> None:
    lean_name, torch_name = runs["facts"]["source"]
    assert lean_name == torch_name and lean_name.startswith("<string>:")


def test_a_put_off_module_is_the_real_one_once_read(runs) -> None:
    assert runs["facts"]["beta_median"] == pytest.approx(0.5)
    assert runs["facts"]["stats_real"] == "module"


def test_a_lean_run_imports_only_its_node_modules_and_still_knows_every_node(runs) -> None:
    expected = {  # examples/txt2img.yaml's node types
        "add_noise",
        "clip_encode",
        "denoise_loop",
        "empty_latent",
        "load_checkpoint",
        "save_image",
        "scheduler",
        "vae_decode",
    }
    assert set(runs["facts"]["library"]) == expected
    assert runs["facts"]["catalogue"] == len(registry.all_types())


def test_the_lean_run_kept_transformers_index_as_transformers_builds_it(runs) -> None:
    import transformers
    import transformers.utils.import_utils as checks

    (kept,) = (Path(runs["cache"]) / "sdflow").glob("transformers-index-*.pickle")
    root = os.path.join(os.path.dirname(transformers.__file__), "models")
    assert pickle.loads(kept.read_bytes()) == checks.create_import_structure_from_path(root)


def test_the_index_fingerprint_follows_the_files(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("__all__ = ['A']\n")
    before = transformers_index.fingerprint(str(tmp_path), "1.0")
    assert transformers_index.fingerprint(str(tmp_path), "1.0") == before
    assert transformers_index.fingerprint(str(tmp_path), "1.1") != before
    (tmp_path / "a.py").write_text("__all__ = ['A', 'B']\n")
    assert transformers_index.fingerprint(str(tmp_path), "1.0") != before


def test_the_off_switch_keeps_the_full_imports(tmp_path: Path) -> None:
    script = "from sdflow import lean; lean.enable(); import sys; print(lean.active(), 'peft' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(tmp_path, SDFLOW_FULL_IMPORTS="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.split() == ["False", "False"]


def test_the_lean_run_kept_the_cpu_probe_figure(runs) -> None:
    if not dtypes.native_on_cpu(torch.bfloat16):
        pytest.skip("no native bf16 on this CPU: auto never probes it")
    figures = json.loads((Path(runs["cache"]) / "sdflow" / "figures.json").read_text())
    (key,) = [key for key in figures if key.startswith("cpu_speedup bf16")]
    assert figures[key] > 0


@pytest.mark.parametrize(
    ("argv", "orig_argv", "command"),
    [
        (["/venv/bin/sdflow", "run"], ["/venv/bin/python", "/venv/bin/sdflow", "run"], True),
        (["-m", "run"], ["/venv/bin/python", "-m", "sdflow.cli", "run"], True),
        (["-m"], ["/venv/bin/python", "-m", "pytest"], False),
        (["/venv/bin/pytest", "tests"], ["/venv/bin/python", "/venv/bin/pytest", "tests"], False),
    ],
)
def test_only_the_sdflow_command_starts_lean(monkeypatch, argv, orig_argv, command) -> None:
    from sdflow import lean

    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    assert lean.started_as_command() is command
