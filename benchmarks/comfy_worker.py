"""Run ComfyUI headless on the CPU, for ``benchmarks/peers.py --comfyui DIR``.

Runs under the python of a ComfyUI venv (``benchmarks/comfy_venv.sh COMFYUI_DIR [VENV]`` makes one; sdflow
is not installed there, and this file imports nothing from it)::

    <comfy-python> benchmarks/comfy_worker.py --comfyui DIR --checkpoint FILE.safetensors \\
        [--threads 1] [--size 256] [--steps 4] [--cfg 7] [--pytorch-attention] (--cold | --serve)

The workflow is ComfyUI's basic txt2img graph in API format: CheckpointLoaderSimple -> CLIPTextEncode
(positive: the prompt; negative: "") -> EmptyLatentImage(size x size, batch 1) -> KSampler(seed, steps, cfg,
euler, normal, denoise 1.0) -> VAEDecode -> SaveImage. It is validated with ComfyUI's own
``execution.validate_prompt`` (as its server does when a prompt is queued) and run with its own
``execution.PromptExecutor`` (as its prompt worker thread does), with the classic cache, so one process
keeps ComfyUI's caching across jobs: the checkpoint loads once, an unchanged text encoding is reused, and
an identical re-run executes nothing.

Modes:

- ``--cold``: load and make one image (prompt "a photograph of an astronaut riding a horse", seed 1), print
  ``RESULT {"peak_rss": bytes}`` and exit 0. The caller times the whole process.
- ``--serve``: load nothing up front, then read JSON lines from stdin, one job each:
  ``{"prompt": str, "seed": int, "save_to": optional path, "sampler_name": optional (euler), "scheduler":
  optional (normal)}``. For each, print
  ``RESULT {"seconds": s, "validate_seconds": v, "png": path}`` where ``seconds`` is the wall time of the
  executor call alone (``PromptExecutor.execute``; the first job includes loading the checkpoint, which
  ComfyUI does lazily), ``validate_seconds`` that of the validation before it, and ``png`` the image
  ComfyUI saved (copied to ``save_to`` if given; otherwise a file in this worker's temp folder, which is
  deleted when the worker exits: read it before closing stdin). On EOF print ``RESULT {"peak_rss": bytes}``
  and exit 0.

Any validation or execution error is printed to stderr and the worker exits 1. stdout carries only the
RESULT lines: everything else (ComfyUI's logging, its prints, tqdm) goes to stderr.

The setup, all before ComfyUI's modules are imported (what ``main.py`` does through its command line):

- ``torch.set_num_threads(--threads)``; HF/transformers offline; ComfyUI's ``comfy.cli_args.args``
  (parsed from an empty command line, as when ComfyUI is imported as a library) gets ``cpu`` (= ``--cpu``)
  and ``fp32_unet``, ``fp32_text_enc``, ``fp32_vae`` (= ``--fp32-unet --fp32-text-enc --fp32-vae``): on
  the CPU ComfyUI would otherwise store the text encoder in fp16. The dtypes actually loaded are logged
  to stderr after the first job (``comfy_worker: loaded ...``). Attention is ComfyUI's own CPU default
  (sub-quadratic in the UNet, split in the VAE) unless ``--pytorch-attention`` (=
  ``--use-pytorch-cross-attention``) asks for torch's scaled_dot_product_attention in both.
- No custom nodes, no API nodes, no comfy_extras (only the core nodes of ``nodes.py`` are registered:
  ``nodes.init_extra_nodes`` is never called), no server, no web frontend, no database. The executor's
  server object is a stand-in whose ``send_sync`` drops the progress messages.
- ComfyUI's "checkpoints" folder list gets the checkpoint's folder; its output, temp, input and user
  folders point into a temp folder deleted at exit.

torchvision stand-in: ComfyUI's ``comfy/sd.py`` imports (through the Stable Cascade code) modules that
``import torchvision`` at top level, though SD 1.5 never calls it. The PyPI torchvision wheels are CUDA
builds that cannot load beside the CPU torch used here ("operator torchvision::nms does not exist"), so
the venv has none. When ``torchvision`` is not importable, this worker (in its own process only, nothing
on disk) appends an import hook to the end of ``sys.meta_path`` that serves empty ``torchvision``
modules; using any attribute of them raises an error that names the stand-in. It prints
``comfy_worker: torchvision stand-in ...`` to stderr when it does. A real torchvision, if installed, is
found first and used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
import types
import uuid
from pathlib import Path

COLD_PROMPT = "a photograph of an astronaut riding a horse"
CLIENT_ID = "sdflow-bench"  # with a client id the executor reports cached nodes' outputs too
SAVE_NODE = "7"


def log(message: str) -> None:
    print(f"comfy_worker: {message}", file=sys.stderr, flush=True)


# -- torchvision stand-in ------------------------------------------------------------------------


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        raise AttributeError(
            f"{self.__name__}.{name}: this is comfy_worker's torchvision stand-in (torchvision is not "
            "installed beside this CPU torch); SD 1.5 should never use it"
        )


class _TorchvisionStandIn(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves empty ``torchvision[.*]`` packages; last on ``sys.meta_path``, so a real one wins."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def install_torchvision_stand_in() -> None:
    if importlib.util.find_spec("torchvision") is None:
        sys.meta_path.append(_TorchvisionStandIn())
        log(
            "torchvision stand-in: torchvision is not installed, so empty stand-in modules serve "
            "ComfyUI's top-level torchvision imports (in this process only; SD 1.5 does not use them)"
        )


# -- ComfyUI --------------------------------------------------------------------------------------


class HeadlessServer:
    """What ``execution.PromptExecutor`` and its progress handler use of ``server.PromptServer``."""

    def __init__(self) -> None:
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}

    def send_sync(self, event, data, sid=None) -> None:
        pass

    def queue_updated(self) -> None:
        pass


def workflow(
    checkpoint: str,
    prompt: str,
    seed: int,
    size: int,
    steps: int,
    cfg: float,
    sampler: str = "euler",
    scheduler: str = "normal",
) -> dict:
    """ComfyUI's default txt2img graph, API format (euler / normal unless a job names others)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        SAVE_NODE: {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "bench"}},
    }


def describe_failure(messages: list) -> str:
    errors = [data for event, data in messages if event == "execution_error"]
    if not errors:
        return json.dumps(messages, default=str, indent=1)
    return "\n".join(
        f"node {e['node_id']} ({e['node_type']}): {e['exception_type']}: {e['exception_message']}\n"
        + "".join(e["traceback"])
        for e in errors
    )


class Comfy:
    def __init__(self, comfyui: Path, checkpoint: Path, scratch: Path, pytorch_attention: bool) -> None:
        sys.path.insert(0, str(comfyui))
        install_torchvision_stand_in()
        from comfy.cli_args import args  # parses an empty command line: ComfyUI's defaults

        args.cpu = True
        args.fp32_unet = args.fp32_text_enc = args.fp32_vae = True
        args.use_pytorch_cross_attention = pytorch_attention
        args.disable_all_custom_nodes = True
        args.disable_api_nodes = True

        import folder_paths

        folder_paths.add_model_folder_path("checkpoints", str(checkpoint.parent), is_default=True)
        for name, setter in [
            ("output", folder_paths.set_output_directory),
            ("temp", folder_paths.set_temp_directory),
            ("input", folder_paths.set_input_directory),
            ("user", folder_paths.set_user_directory),
        ]:
            (scratch / name).mkdir()
            setter(str(scratch / name))

        import comfy.model_management
        import execution

        self.model_management = comfy.model_management
        self.execution = execution
        self.folder_paths = folder_paths
        self.checkpoint = checkpoint.name
        self.executor = execution.PromptExecutor(
            HeadlessServer(), cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
        )
        self.dtypes_logged = False

    def run(
        self,
        prompt: str,
        seed: int,
        size: int,
        steps: int,
        cfg: float,
        sampler: str = "euler",
        scheduler: str = "normal",
    ) -> tuple[float, float, Path]:
        """Validate and execute one job; returns (execute seconds, validate seconds, saved PNG)."""
        graph = workflow(self.checkpoint, prompt, seed, size, steps, cfg, sampler, scheduler)
        prompt_id = str(uuid.uuid4())
        started = time.perf_counter()
        valid, error, outputs, node_errors = asyncio.run(
            self.execution.validate_prompt(prompt_id, graph, None)
        )
        validate_seconds = time.perf_counter() - started
        if not valid:
            raise RuntimeError(f"ComfyUI rejected the workflow: {error} {node_errors}")
        self.executor.server.last_prompt_id = prompt_id
        started = time.perf_counter()
        self.executor.execute(graph, prompt_id, {"client_id": CLIENT_ID}, outputs)
        seconds = time.perf_counter() - started
        messages = self.executor.status_messages
        if not self.executor.success or "execution_success" not in [event for event, _ in messages]:
            raise RuntimeError("ComfyUI execution failed:\n" + describe_failure(messages))
        image = self.executor.history_result["outputs"][SAVE_NODE]["images"][0]
        png = Path(self.folder_paths.get_output_directory(), image["subfolder"], image["filename"])
        if not self.dtypes_logged:
            self.log_dtypes()
            self.dtypes_logged = True
        return seconds, validate_seconds, png

    def log_dtypes(self) -> None:
        """The weight dtypes (and manual-cast compute dtype, if any) of what ComfyUI has loaded."""
        for loaded in self.model_management.current_loaded_models:
            patcher = loaded.model
            if patcher is None:
                continue
            module = patcher.model
            dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()})
            cast = getattr(module, "manual_cast_dtype", None)
            log(
                f"loaded {type(module).__name__} on {loaded.device}: weights {','.join(dtypes)}"
                + (f", manual cast to {cast}" if cast is not None else "")
            )


# -- main -----------------------------------------------------------------------------------------


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="ComfyUI checkout")
    parser.add_argument("--checkpoint", type=Path, required=True, help="SD 1.5 single file (.safetensors)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument(
        "--pytorch-attention",
        action="store_true",
        help="ComfyUI's --use-pytorch-cross-attention (on the CPU it defaults to sub-quadratic attention)",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--cold", action="store_true", help="load, one image, peak RSS, exit")
    mode.add_argument("--serve", action="store_true", help="one job per JSON line on stdin")
    args = parser.parse_args()

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[name] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"

    import torch

    torch.set_num_threads(args.threads)

    # stdout carries RESULT lines only; anything ComfyUI prints goes to stderr.
    results = sys.stdout
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def result(payload: dict) -> None:
        results.write("RESULT " + json.dumps(payload) + "\n")
        results.flush()

    scratch = Path(tempfile.mkdtemp(prefix="comfy-worker-"))
    try:
        comfy = Comfy(args.comfyui.resolve(), args.checkpoint.resolve(), scratch, args.pytorch_attention)
        if args.cold:
            comfy.run(COLD_PROMPT, 1, args.size, args.steps, args.cfg)
            result({"peak_rss": peak_rss()})
            return 0
        for line in sys.stdin:
            if not line.strip():
                continue
            job = json.loads(line)
            seconds, validate_seconds, png = comfy.run(
                job["prompt"],
                int(job["seed"]),
                args.size,
                args.steps,
                args.cfg,
                job.get("sampler_name", "euler"),
                job.get("scheduler", "normal"),
            )
            if job.get("save_to"):
                shutil.copyfile(png, job["save_to"])
                png = Path(job["save_to"])
            result({"seconds": seconds, "validate_seconds": validate_seconds, "png": str(png)})
        result({"peak_rss": peak_rss()})
        return 0
    except Exception:
        traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
