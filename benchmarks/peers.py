"""sdflow against diffusers' StableDiffusionPipeline on a full-size (random) SD1.5 model, in one run.

    python benchmarks/peers.py                       # 256x256, 4 euler steps, cfg 7, fp32, 1 thread
    python benchmarks/peers.py --steps 2 --rounds 3 --keep-model /tmp/sd15-random

It first writes a full-size SD1.5 diffusers folder with random weights (diffusers' default SD1.5
architecture: 860 M-parameter UNet, 123 M text encoder, 84 M VAE; stored in fp16, 2.1 GB) to a
temporary folder, deleted at the end unless --keep-model names a folder to keep it in (an existing
one is reused). Nothing is downloaded. Then:

1. cold: load + one image in a fresh process, sdflow and diffusers alternating (--rounds each),
   timed from process start to exit; each process reports its peak RSS;
2. warm, in one process holding one copy of the weights that both use: for --rounds repetitions,
   a seed-only re-run, a prompt change and an identical re-run, each done by sdflow and by the
   pipeline back to back (the order flipping each repetition).

It prints every figure and, per row, sdflow / diffusers as the median of the paired ratios (each
pair ran back to back under the same load). The first warm images of both are compared as a
check that they did the same work. ``--comfyui DIR`` is accepted but not implemented yet: it says so.
Needs about 6 GB of free memory (fp32 weights, plus activations).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
PROMPT = "a photograph of an astronaut riding a horse"


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


# -- the two systems -------------------------------------------------------------------------------


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


def diffusers_pipeline(model: Path | None, modules=None):
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    if modules is None:
        pipe = StableDiffusionPipeline.from_pretrained(
            model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        )
    else:
        pipe = StableDiffusionPipeline(
            **modules, safety_checker=None, feature_extractor=None, requires_safety_checker=False
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
        write_model(model)
        return
    if args.worker == "cold-sdflow":
        import sdflow

        runner = sdflow.Runner(device="cpu", dtype="fp32")
        sdflow_image(runner, sdflow_graph(model, args), PROMPT, 1, args.cfg)
    elif args.worker == "cold-diffusers":
        diffusers_image(diffusers_pipeline(model), PROMPT, 1, args)
    elif args.worker == "warm":
        _report(warm(model, args))
        return
    _report({"peak_rss": _peak_rss()})


def warm(model: Path, args: argparse.Namespace) -> dict:
    """Alternating repetitions in one process, both systems on the same module objects."""
    import numpy as np

    import sdflow

    runner = sdflow.Runner(device="cpu", dtype="fp32")
    graph = sdflow_graph(model, args)
    first = runner.run(graph, inputs={"prompt": PROMPT, "seed": 1, "cfg": args.cfg}, outputs=["decoded"])
    ours = first.image("decoded")
    model_, clip, vae = (first["ckpt.model"], first["ckpt.clip"], first["ckpt.vae"])
    modules = {
        "unet": model_.unet,
        "text_encoder": clip.text_encoder,
        "tokenizer": clip.tokenizer,
        "vae": vae.vae,
        "scheduler": __import__("diffusers").EulerDiscreteScheduler.from_config(model_.scheduler_config),
    }
    pipe = diffusers_pipeline(None, modules)
    theirs = diffusers_image(pipe, PROMPT, 1, args)
    difference = int(np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max())
    rows: dict[str, list[list[float]]] = {"seed-only re-run": [], "prompt change": [], "identical re-run": []}
    prompt, seed = PROMPT, 1
    for repetition in range(args.rounds):
        for scenario in rows:
            if scenario == "seed-only re-run":
                seed += 1
            elif scenario == "prompt change":
                prompt = f"{PROMPT}, variation {repetition}"
            jobs = {
                "sdflow": lambda p=prompt, s=seed: sdflow_image(runner, graph, p, s, args.cfg),
                "diffusers": lambda p=prompt, s=seed: diffusers_image(pipe, p, s, args),
            }
            order = list(jobs) if repetition % 2 == 0 else list(jobs)[::-1]
            seconds = {}
            for name in order:
                started = time.perf_counter()
                jobs[name]()
                seconds[name] = time.perf_counter() - started
            rows[scenario].append([seconds["sdflow"], seconds["diffusers"]])
    return {"rows": rows, "max_pixel_difference": difference, "peak_rss": _peak_rss()}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _report(document: dict) -> None:
    print("RESULT " + json.dumps(document), flush=True)


def _spawn(args: argparse.Namespace, kind: str, model: Path) -> tuple[float, dict]:
    command = [sys.executable, __file__, "--worker", kind, "--model", str(model)]
    command += ["--size", str(args.size), "--steps", str(args.steps), "--cfg", str(args.cfg)]
    command += ["--threads", str(args.threads), "--rounds", str(args.rounds)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr[-3000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return seconds, json.loads(lines[-1][len("RESULT ") :]) if lines else {}


# -- the driver ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--cfg", type=float, default=7.0)
    parser.add_argument("--rounds", type=int, default=2, help="cold processes per system, warm repetitions")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cold", action="store_true", help="only the warm, same-process comparison")
    parser.add_argument("--keep-model", metavar="DIR", help="write the model here (or reuse it) and keep it")
    parser.add_argument(
        "--comfyui", metavar="DIR", help="a ComfyUI checkout to measure too (not implemented)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.comfyui:
        print("--comfyui: not implemented yet; measuring sdflow and diffusers only", file=sys.stderr)
    temporary = None if args.keep_model else tempfile.mkdtemp(prefix="sdflow-peers-")
    model = Path(args.keep_model or temporary)  # type: ignore[arg-type]
    try:
        if not (model / "unet" / "diffusion_pytorch_model.safetensors").exists():
            print(f"writing a random full-size SD1.5 model to {model} ...", file=sys.stderr)
            _spawn(args, "write", model)
        measure(args, model)
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def measure(args: argparse.Namespace, model: Path) -> None:
    cold: dict[str, list[float]] = {"sdflow": [], "diffusers": []}
    rss: dict[str, list[int]] = {"sdflow": [], "diffusers": []}
    for round_ in range(0 if args.no_cold else args.rounds):
        order = ["sdflow", "diffusers"] if round_ % 2 == 0 else ["diffusers", "sdflow"]
        for name in order:
            seconds, result = _spawn(args, f"cold-{name}", model)
            cold[name].append(seconds)
            rss[name].append(result["peak_rss"])
            print(
                f"cold {name}: {seconds:.2f} s, peak RSS {result['peak_rss'] / 2**30:.2f} GB", file=sys.stderr
            )
    _, warm_result = _spawn(args, "warm", model)

    print(
        f"\nfull-size SD1.5 (random weights), {args.size}x{args.size}, {args.steps} euler steps, "
        f"cfg {args.cfg}, fp32, {args.threads} thread(s), {args.rounds} rounds; seconds (each "
        "repetition), ratio = median of paired sdflow/diffusers"
    )
    print(f"{'':<22}{'sdflow':>30} {'diffusers':>30}{'ratio':>8}")
    if not args.no_cold:
        _row("cold (load + image)", list(zip(cold["sdflow"], cold["diffusers"], strict=True)))
    for scenario, rows in warm_result["rows"].items():
        _row(scenario, [tuple(row) for row in rows])
    if not args.no_cold:
        ours = " / ".join(f"{value / 2**30:.2f}" for value in rss["sdflow"])
        theirs = " / ".join(f"{value / 2**30:.2f}" for value in rss["diffusers"])
        ratio = max(rss["sdflow"]) / max(rss["diffusers"])
        print(f"{'peak RSS (cold), GB':<22}{ours:>30} {theirs:>30}{ratio:>8.2f}")
    warm_rss = warm_result["peak_rss"] / 2**30
    print(f"warm process (both systems, one copy of the weights): peak RSS {warm_rss:.2f} GB")
    print(
        f"first warm images: max pixel difference sdflow vs diffusers = {warm_result['max_pixel_difference']}"
    )


def _row(label: str, pairs: list[tuple[float, float]]) -> None:
    ours = " / ".join(f"{a:.3f}" for a, _ in pairs)
    theirs = " / ".join(f"{b:.3f}" for _, b in pairs)
    ratio = statistics.median(a / b for a, b in pairs)
    print(f"{label:<22}{ours:>30} {theirs:>30}{ratio:>8.3f}")


if __name__ == "__main__":
    main()
