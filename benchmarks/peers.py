"""sdflow against diffusers' StableDiffusionPipeline (and ComfyUI) on a full-size (random) SD1.5 model.

    python benchmarks/peers.py                       # 256x256, 4 euler steps, cfg 7, fp32, 1 thread
    python benchmarks/peers.py --rounds 5 --keep-model /tmp/sd15-random
    benchmarks/comfy_venv.sh /path/to/ComfyUI && python benchmarks/peers.py --comfyui /path/to/ComfyUI

It first writes the same random full-size SD1.5 weights twice into a temporary folder (deleted at the
end unless --keep-model names one to keep or reuse): as a diffusers folder (``diffusers/``: 860 M-param
UNet, 123 M text encoder, 84 M VAE, fp16 on disk, 2.1 GB) and as a single file in the original LDM
layout (``sd15.safetensors``), the form users download. Nothing is downloaded. Then:

1. cold: load + one image in a fresh process, from process start to exit, for every system and model
   form, in an order that rotates every round: sdflow's command line (``sdflow run``, the image written
   as a PNG) on the folder and on the file; a diffusers script (``from_pretrained`` on the folder,
   ``from_single_file`` on the file, the image saved as a PNG); and ComfyUI on the file (--comfyui:
   headless through its own executor, ``benchmarks/comfy_worker.py`` in ComfyUI's venv). Peak RSS per
   process comes from ``wait4``.
2. warm: one process holds sdflow and a diffusers pipeline built from the modules sdflow loaded (one
   copy of the weights), a second holds ComfyUI. For --rounds repetitions, a seed-only re-run, a prompt
   change and an identical re-run are done by each system back to back, the order rotating.

It prints every figure and, per row, sdflow / peer as the median of the paired ratios (each pair ran
back to back under the same load). The first warm images of sdflow and diffusers are compared as a
check that they did the same work. Needs about 6 GB of free memory, 13 GB with ComfyUI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "sdflow" / "builtin" / "tiny-sd15"
SD15_CONFIGS = ROOT / "sdflow" / "models" / "configs" / "sd15"
PROMPT = "a photograph of an astronaut riding a horse"
SCENARIOS = ("seed-only re-run", "prompt change", "identical re-run")


# -- the model -------------------------------------------------------------------------------------


def write_model(folder: Path) -> None:
    """A full-size SD1.5 diffusers folder with random weights (fp16 on disk), one component at a time."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "scheduler"):
        shutil.copytree(TINY / name, folder / name, dirs_exist_ok=True)
    shutil.copy(TINY / "model_index.json", folder / "model_index.json")
    # diffusers' defaults are SD1.x's UNet but for the text width and the latent size
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    unet.half().save_pretrained(folder / "unet")
    del unet
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    vae.half().save_pretrained(folder / "vae")
    del vae
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
    )
    CLIPTextModel(config).half().save_pretrained(folder / "text_encoder")


def write_file(folder: Path, file: Path) -> None:
    """The folder's weights as one LDM-layout single file (fp16), with the keys sdflow reads."""
    import torch

    sys.path.insert(0, str(ROOT / "tools"))
    from make_single_files import write_single_file

    write_single_file(folder, file, "sd15", dtype=torch.float16)


# -- the systems -----------------------------------------------------------------------------------


def sdflow_graph(model: Path, args: argparse.Namespace):
    import sdflow

    graph = sdflow.load(ROOT / "examples" / "txt2img.yaml")
    graph["ckpt"]["checkpoint"] = str(model)
    graph["empty"].set(width=args.size, height=args.size)
    graph["schedule"].set(sampler="euler", steps=args.steps)
    return graph


def sdflow_image(runner, graph, prompt: str, seed: int, cfg: float):
    result = runner.run(graph, inputs={"prompt": prompt, "seed": seed, "cfg": cfg}, outputs=["decoded"])
    return result.image("decoded")


def diffusers_pipeline(model: Path | None, modules=None, single_file: bool = False):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    if modules is not None:
        pipe = StableDiffusionPipeline(
            **modules, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    elif single_file:
        pipe = StableDiffusionPipeline.from_single_file(
            str(model), config=str(SD15_CONFIGS), local_files_only=True, torch_dtype=torch.float32
        )
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        )
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_image(pipe, prompt: str, seed: int, args: argparse.Namespace):
    import torch

    return pipe(
        prompt,
        negative_prompt="",
        height=args.size,
        width=args.size,
        num_inference_steps=args.steps,
        guidance_scale=args.cfg,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]


# -- workers (each in its own process) -------------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    model = Path(args.model)
    if args.worker == "write":
        write_model(model / "diffusers")
        write_file(model / "diffusers", model / "sd15.safetensors")
    elif args.worker in ("cold-diffusers-folder", "cold-diffusers-file"):
        pipe = diffusers_pipeline(model, single_file=args.worker.endswith("file"))
        diffusers_image(pipe, PROMPT, 1, args).save(Path(args.out) / "diffusers.png")
    elif args.worker == "serve":
        serve(model, args)


def serve(model: Path, args: argparse.Namespace) -> None:
    """sdflow and a pipeline on the same module objects; one job per JSON line on stdin."""
    import numpy as np

    import sdflow

    runner = sdflow.Runner(device="cpu", dtype="fp32")
    graph = sdflow_graph(model, args)
    first = runner.run(graph, inputs={"prompt": PROMPT, "seed": 1, "cfg": args.cfg}, outputs=["decoded"])
    model_, clip, vae = (first["ckpt.model"], first["ckpt.clip"], first["ckpt.vae"])
    modules = {
        "unet": model_.unet,
        "text_encoder": clip.text_encoder,
        "tokenizer": clip.tokenizer,
        "vae": vae.vae,
        "scheduler": __import__("diffusers").EulerDiscreteScheduler.from_config(model_.scheduler_config),
    }
    pipe = diffusers_pipeline(None, modules)
    ours, theirs = first.image("decoded"), diffusers_image(pipe, PROMPT, 1, args)
    difference = int(np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max())
    _report({"max_pixel_difference": difference})
    jobs = {
        "sdflow": lambda job: sdflow_image(runner, graph, job["prompt"], job["seed"], args.cfg),
        "diffusers": lambda job: diffusers_image(pipe, job["prompt"], job["seed"], args),
    }
    for line in sys.stdin:
        job = json.loads(line)
        started = time.perf_counter()
        jobs[job["system"]](job)
        _report({"seconds": time.perf_counter() - started})


def _report(document: dict) -> None:
    print("RESULT " + json.dumps(document), flush=True)


# -- the driver ------------------------------------------------------------------------------------


class Warm:
    """A serving worker process: one JSON job per line in, one RESULT line out."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )

    def ask(self, job: dict | None = None) -> dict:
        if job is not None:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        sys.exit(f"a warm worker stopped: see {self.log.name}")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.log.close()


def cold(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Seconds from process start to exit, and the process's peak RSS in bytes."""
    with log.open("w") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed ({process.returncode}):\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=3, help="cold processes per system, warm repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cold", action="store_true", help="only the warm comparisons")
    parser.add_argument("--keep-model", metavar="DIR", help="write the model here (or reuse it) and keep it")
    parser.add_argument("--comfyui", metavar="DIR", help="a ComfyUI checkout to measure too")
    parser.add_argument(
        "--comfy-python",
        metavar="PYTHON",
        help="the python of ComfyUI's venv (default: DIR/.venv-sdflow-bench/bin/python, which "
        "benchmarks/comfy_venv.sh DIR makes)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    comfy_python = None
    if args.comfyui:
        comfy_python = Path(args.comfy_python or Path(args.comfyui) / ".venv-sdflow-bench" / "bin" / "python")
        if not comfy_python.exists():
            sys.exit(
                f"{comfy_python} not found: make ComfyUI's venv with benchmarks/comfy_venv.sh {args.comfyui}"
            )
    temporary = Path(tempfile.mkdtemp(prefix="sdflow-peers-"))
    model = Path(args.keep_model) if args.keep_model else temporary / "model"
    try:
        if not (model / "sd15.safetensors").exists():
            print(
                f"writing a random full-size SD1.5 model (folder and single file) to {model} ...",
                file=sys.stderr,
            )
            cold(_ours(args, "write", model), _env(args), temporary / "write.log")
        measure(args, model, comfy_python, temporary)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _env(args: argparse.Namespace) -> dict[str, str]:
    threads = str(args.threads)
    return {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "HF_HUB_OFFLINE": "1"}


def _ours(args: argparse.Namespace, kind: str, model: Path, out: Path | None = None) -> list[str]:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(model), "--out", str(out or "")]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--cfg", str(args.cfg)]
    return [*command, "--threads", str(args.threads)]


def _sdflow_cli(args: argparse.Namespace, workflow: Path, checkpoint: Path, out: Path) -> list[str]:
    command = [str(Path(sys.executable).parent / "sdflow"), "run", str(workflow), "--quiet"]
    command += ["--device", "cpu", "--dtype", "fp32", "--output-dir", str(out)]
    inputs = {"checkpoint": checkpoint, "sampler": "euler", "steps": args.steps, "cfg": args.cfg}
    inputs |= {"prompt": PROMPT, "negative": "", "seed": 1}
    for name, value in inputs.items():
        command += ["--set", f"{name}={value}"]
    return command


def _comfy(args: argparse.Namespace, python: Path, file: Path, mode: str) -> list[str]:
    command = [str(python), str(ROOT / "benchmarks" / "comfy_worker.py"), "--comfyui", args.comfyui]
    command += ["--checkpoint", str(file), "--threads", str(args.threads), "--size", str(args.size)]
    return [*command, "--steps", str(args.steps), "--cfg", str(args.cfg), mode]


def measure(args: argparse.Namespace, model: Path, comfy_python: Path | None, scratch: Path) -> None:
    import sdflow

    folder, file = model / "diffusers", model / "sd15.safetensors"
    env = _env(args)
    workflow = scratch / "txt2img.yaml"
    example = sdflow.load(ROOT / "examples" / "txt2img.yaml")
    example["empty"].set(width=args.size, height=args.size)
    example.save(workflow)  # the example at --size; the CLI sets the inputs (--set)
    # row -> system -> one figure per round
    rows: dict[str, dict[str, list[float]]] = {}
    if not args.no_cold:
        colds = {
            ("cold, diffusers folder", "sdflow"): lambda out: _sdflow_cli(args, workflow, folder, out),
            ("cold, diffusers folder", "diffusers"): lambda out: _ours(
                args, "cold-diffusers-folder", folder, out
            ),
            ("cold, single file", "sdflow"): lambda out: _sdflow_cli(args, workflow, file, out),
            ("cold, single file", "diffusers"): lambda out: _ours(args, "cold-diffusers-file", file, out),
        }
        if comfy_python:
            colds[("cold, single file", "ComfyUI")] = lambda out: _comfy(args, comfy_python, file, "--cold")
        by_row: dict[str, list[str]] = {}
        for row, system in colds:
            by_row.setdefault(row, []).append(system)
        for round_ in range(args.rounds):
            # rows in turn; within a row the systems back to back (so each pair ran under the same
            # load), their order rotating every round
            order = [
                (row, system)
                for row, systems in by_row.items()
                for system in systems[round_ % len(systems) :] + systems[: round_ % len(systems)]
            ]
            for row, system in order:
                out = Path(tempfile.mkdtemp(dir=scratch))
                seconds, rss = cold(colds[(row, system)](out), env, scratch / "cold.log")
                rows.setdefault(row, {}).setdefault(system, []).append(seconds)
                rows.setdefault(f"peak RSS, {row}, GB", {}).setdefault(system, []).append(rss / 2**30)
                print(f"{row}, {system}: {seconds:.2f} s, peak RSS {rss / 2**30:.2f} GB", file=sys.stderr)
    warm_rows, difference = run_warm(args, folder, file, comfy_python, env, scratch)
    rows.update(warm_rows)
    report(args, rows, difference)


def run_warm(args, folder: Path, file: Path, comfy_python: Path | None, env, scratch: Path):
    workers = {"ours": Warm(_ours(args, "serve", folder), env, scratch / "warm.log")}
    difference = workers["ours"].ask()["max_pixel_difference"]  # sdflow's and the pipeline's first image
    systems = ["sdflow", "diffusers"]
    if comfy_python:
        workers["comfy"] = Warm(_comfy(args, comfy_python, file, "--serve"), env, scratch / "comfy.log")
        workers["comfy"].ask({"prompt": PROMPT, "seed": 1})  # loads the checkpoint, first image
        systems.append("ComfyUI")
    rows: dict[str, dict[str, list[float]]] = {scenario: {} for scenario in SCENARIOS}
    prompt, seed = PROMPT, 1
    try:
        for repetition in range(args.rounds):
            for scenario in SCENARIOS:
                if scenario == "seed-only re-run":
                    seed += 1
                elif scenario == "prompt change":
                    prompt = f"{PROMPT}, variation {repetition}"
                shift = repetition % len(systems)
                for system in systems[shift:] + systems[:shift]:
                    if system == "ComfyUI":  # its validation too, as sdflow's figure includes sdflow's
                        done = workers["comfy"].ask({"prompt": prompt, "seed": seed})
                        seconds = done["seconds"] + done["validate_seconds"]
                    else:
                        seconds = workers["ours"].ask({"system": system, "prompt": prompt, "seed": seed})[
                            "seconds"
                        ]
                    rows[scenario].setdefault(system, []).append(seconds)
                    print(f"{scenario}, {system}: {seconds:.3f} s", file=sys.stderr)
    finally:
        for warm in workers.values():
            warm.close()
    return rows, difference


def report(args: argparse.Namespace, rows: dict[str, dict[str, list[float]]], difference: int) -> None:
    """A Markdown table: each system's figures per round, and sdflow / peer per row."""
    systems = [s for s in ("sdflow", "diffusers", "ComfyUI") if any(s in row for row in rows.values())]
    print(
        f"\nfull-size SD1.5 (random weights), {args.size}x{args.size}, {args.steps} euler steps, cfg "
        f"{args.cfg}, fp32, {args.threads} thread(s), {args.rounds} rounds; seconds (or GB) of each "
        "round; ratio = median of the paired sdflow / peer figures\n"
    )
    peers = systems[1:]
    print("| | " + " | ".join(systems) + " | " + " | ".join(f"sdflow / {p}" for p in peers) + " |")
    print("|---" * (1 + len(systems) + len(peers)) + "|")
    for label, figures in rows.items():
        cells = [" / ".join(_figure(v) for v in figures[s]) if s in figures else "-" for s in systems]
        for peer in peers:
            if "sdflow" in figures and peer in figures:
                pairs = zip(figures["sdflow"], figures[peer], strict=True)
                cells.append(f"**{statistics.median(a / b for a, b in pairs):.3f}**")
            else:
                cells.append("-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"\nfirst warm images: max pixel difference sdflow vs diffusers = {difference}")


def _figure(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


if __name__ == "__main__":
    main()
