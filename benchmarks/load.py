"""Loading a full-size SD 1.5 single file: sdflow against diffusers' ``from_single_file``.

    python benchmarks/load.py [--rounds 2] [--dtypes fp32,fp16] [--keep DIR]

Writes a random full-size SD 1.5 checkpoint in the original LDM layout (fp16, ~2.1 GB, 1.07 B
parameters; keys and shapes from the configs sdflow ships) to a temporary folder, streamed tensor by
tensor, and deletes it at the end. Then, for each dtype and round, loads it once with sdflow
(``sdflow.models.checkpoints.load``) and once with ``StableDiffusionPipeline.from_single_file(...,
config=<the same configs>, local_files_only=True)``, each in a fresh subprocess (alternating,
the order flipping every round), one torch thread, offline. Each child reports the load's wall time,
its peak resident memory (``ru_maxrss``) and its resident memory before loading; then it reads every
weight once (a checksum: both sides must load the same numbers; memory-mapped weights are only read
on first use) and reports the time and resident memory after that too. Prints medians and sdflow / diffusers
ratios; the goal is <= 1.0 for both time and peak memory.

Both sides end in the same state: sdflow keeps a VAE whose config sets ``force_upcast`` in fp32 under
fp16 (the README's dtype rule), so at fp16 the diffusers side moves its VAE to fp32 inside the timed
region too.
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

import torch

CONFIGS = Path(__file__).resolve().parent.parent / "sdflow" / "models" / "configs" / "sd15"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# -- the file -----------------------------------------------------------------------------------


def full_size_shapes(configs: Path) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of an SD 1.5 single file with the configs in ``configs`` (meta tensors)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdflow.models.ldm_keys import clip_mapping, unet_mapping, vae_mapping

    unet_config = json.loads((configs / "unet/config.json").read_text())
    vae_config = json.loads((configs / "vae/config.json").read_text())
    with init_empty_weights():
        parts = [
            (UNet2DConditionModel.from_config(unet_config), unet_mapping(unet_config)),
            (AutoencoderKL.from_config(vae_config), vae_mapping(vae_config)),
            (
                CLIPTextModel(CLIPTextConfig.from_json_file(configs / "text_encoder/config.json")),
                clip_mapping("cond_stage_model.transformer."),
            ),
        ]
    shapes = {}
    for module, mapping in parts:
        for name, tensor in module.state_dict().items():
            source = mapping(name)
            shapes[source.key] = source.file_shape(tuple(tensor.shape))
    return shapes


def write_random_checkpoint(path: Path, configs: Path, seed: int = 0) -> int:
    """Stream a random fp16 safetensors file in the SD 1.5 layout; returns its size."""
    shapes = full_size_shapes(configs)
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(torch.Size(shape).numel())
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    generator = torch.Generator().manual_seed(seed)
    with open(path, "wb") as file:
        file.write(len(raw).to_bytes(8, "little") + raw)
        for key, shape in shapes.items():
            scale = 1.0 if key.endswith(("norm.weight", "norm1.weight", "norm2.weight")) else 0.02
            tensor = (torch.randn(shape, generator=generator) * scale).to(torch.float16)
            file.write(tensor.numpy().tobytes())
    return path.stat().st_size


# -- one measured load (in a child process) -----------------------------------------------------


def child(side: str, file: Path, dtype_name: str, configs: Path) -> None:
    torch.set_num_threads(1)
    dtype = DTYPES[dtype_name]
    # Both sides import the classes they use before the clock starts (diffusers imports lazily).
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    from sdflow.models import checkpoints, resolver
    from sdflow.models.loaded import LoadOptions

    before = _rss_now()
    started = time.perf_counter()
    if side == "sdflow":
        source = resolver.checkpoint(str(file))
        loaded = checkpoints.load(source, torch.device("cpu"), dtype, LoadOptions(config=configs))
        modules = (loaded.unet, loaded.vae, loaded.text_encoder)
    else:
        pipe = StableDiffusionPipeline.from_single_file(
            str(file), config=str(configs), local_files_only=True, torch_dtype=dtype
        )
        if dtype == torch.float16 and pipe.vae.config.force_upcast:
            pipe.vae.to(torch.float32)  # the end state sdflow delivers (see the module docstring)
        modules = (pipe.unet, pipe.vae, pipe.text_encoder)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # Memory-mapped weights are read on first use: touch every one (a checksum) and time that too.
    checksum = sum(float(p.double().sum()) for m in modules for p in m.state_dict().values())
    touched = time.perf_counter() - started
    rss_touched = _rss_now()
    report = {"seconds": seconds, "peak": peak, "before": before, "checksum": checksum}
    print(json.dumps({**report, "touched": touched, "rss_touched": rss_touched}))


def _rss_now() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(side: str, file: Path, dtype_name: str, configs: Path) -> dict:
    command = [sys.executable, __file__, "--child", side, str(file), dtype_name, str(configs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtypes", default="fp32,fp16")
    parser.add_argument("--keep", type=Path, help="write the file here and keep it (default: temp, deleted)")
    parser.add_argument(
        "--configs", type=Path, default=CONFIGS, help="SD 1.x config folder (default: sdflow's, full size)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, file, dtype_name, configs = args.child
        child(side, Path(file), dtype_name, Path(configs))
        return
    folder = args.keep or Path(tempfile.mkdtemp(prefix="sdflow-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "random-sd15.safetensors"
    try:
        if not file.exists():
            started = time.perf_counter()
            size = write_random_checkpoint(file, args.configs)
            print(f"wrote {file} ({size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")
        for dtype_name in args.dtypes.split(","):
            run_dtype(file, dtype_name, args.rounds, args.configs)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def run_dtype(file: Path, dtype_name: str, rounds: int, configs: Path) -> None:
    results: dict[str, list[dict]] = {"sdflow": [], "diffusers": []}
    for index in range(rounds):
        order = ["sdflow", "diffusers"] if index % 2 == 0 else ["diffusers", "sdflow"]
        for side in order:
            results[side].append(measure(side, file, dtype_name, configs))
    sums = {side: {round(r["checksum"], 0) for r in runs} for side, runs in results.items()}
    same = "same weights" if sums["sdflow"] == sums["diffusers"] else f"DIFFERENT weights {sums}"
    print(f"\n{dtype_name} ({rounds} rounds each, {same}):")
    medians = {}
    for side, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak"] for r in runs)
        before = statistics.median(r["before"] for r in runs)
        medians[side] = (seconds, peak)
        times = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        touched = statistics.median(r["touched"] for r in runs)
        rss_touched = statistics.median(r["rss_touched"] for r in runs)
        print(
            f"  {side:9s} load {seconds:6.1f} s (runs: {times})   peak RSS {peak / 2**30:5.2f} GiB "
            f"(before loading {before / 2**30:.2f} GiB); after reading every weight once: "
            f"{touched:.1f} s, RSS {rss_touched / 2**30:.2f} GiB"
        )
    time_ratio = medians["sdflow"][0] / medians["diffusers"][0]
    rss_ratio = medians["sdflow"][1] / medians["diffusers"][1]
    pairs = zip(results["sdflow"], results["diffusers"], strict=True)
    paired = [a["seconds"] / b["seconds"] for a, b in pairs]
    print(f"  sdflow / diffusers: time {time_ratio:.2f}, peak RSS {rss_ratio:.2f} (goal <= 1.0 on both)")
    print(f"  time ratio of each round's pair: {', '.join(f'{r:.2f}' for r in paired)}")


if __name__ == "__main__":
    main()
