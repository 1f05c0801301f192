"""`sdflow bench`: the latency table of a workflow — seconds per image for each size x sampler after
warm-up (mean and min), split into text encoding, denoising and decoding, with peak memory, the
device and the dtype — printed and written as JSON.

Every repetition does the whole job: the output cache is emptied first (loaded models stay, as in a
long-lived process), and output nodes (SaveImage) are left out, so nothing is written but the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdflow.cli.options import add_set_argument
from sdflow.errors import Location, UserError

PHASES = {"CLIPEncode": "text", "DenoiseLoop": "denoise", "VAEDecode": "decode"}


def add_command(commands: Any) -> None:
    """Register `sdflow bench` on the CLI's subparsers."""
    from sdflow.cli.runner_options import add_runner_arguments

    bench = commands.add_parser("bench", help="latency table: seconds per image per size x sampler")
    bench.add_argument("workflow")
    bench.add_argument("--sizes", help="image sizes to set on every EmptyLatent: 256,512 or 512x768,...")
    bench.add_argument("--samplers", help="samplers to set on every Scheduler: ddim,euler,...")
    bench.add_argument("--repeat", type=int, default=5, help="timed runs per cell (default 5)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed runs first, per cell (default 1)")
    add_set_argument(bench, "a workflow input")
    bench.add_argument("--output", metavar="FILE.json", help="default: WORKFLOW-NAME_bench.json here")
    bench.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runner_arguments(bench)
    bench.set_defaults(handler=main)


@dataclass
class Cell:
    """One size x sampler: seconds per image of each timed run, its phases, peak memory."""

    size: str
    sampler: str | None
    images_per_run: int
    seconds_per_image: list[float] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)  # mean seconds per image
    peak_memory_bytes: int = 0

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds_per_image)

    @property
    def min(self) -> float:
        return min(self.seconds_per_image)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean_s": self.mean, "min_s": self.min}


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sdflow.cli.options import parse_assignment, writable_folder
    from sdflow.cli.runner_options import make_runner
    from sdflow.files import write_new_path
    from sdflow.graphs.builder import load
    from sdflow.runner.core.plan import check

    if args.repeat < 1 or args.warmup < 0:
        raise UserError("--repeat must be at least 1 and --warmup at least 0", Location(field="--repeat"))
    graph = load(args.workflow)
    inputs = dict(parse_assignment(graph, text) for text in args.set)
    sizes = _sizes(args.sizes)
    samplers = _samplers(args.samplers)
    latents = _nodes_of(graph, "EmptyLatent", "--sizes", sizes)
    schedulers = _nodes_of(graph, "Scheduler", "--samplers", samplers)
    targets = _targets(graph)
    cells = [(size, sampler) for size in sizes or [None] for sampler in samplers or [None]]
    for size, sampler in cells:  # every cell is checked before the first one runs
        _configure(graph, latents, schedulers, size, sampler)
        check(graph, inputs, targets)
    output = Path(args.output or f"{Path(args.workflow).stem}_bench.json")
    writable_folder(output.parent, f"--output {output}")
    runner = make_runner(args)
    progress = tqdm(
        total=len(cells) * (args.warmup + args.repeat), desc="bench", file=sys.stderr, disable=args.quiet
    )
    results = []
    for size, sampler in cells:
        _configure(graph, latents, schedulers, size, sampler)
        results.append(_measure(runner, graph, inputs, targets, args, progress, size, sampler))
    progress.close()
    document = _document(args, runner, results)
    print(table(document))
    written = write_new_path(output, json.dumps(document, indent=2).encode())
    print(f"written: {written}", file=sys.stderr)
    return 0


def _measure(runner, graph, inputs, targets, args, progress, size, sampler) -> Cell:
    phases: dict[str, list[float]] = {name: [] for name in (*PHASES.values(), "other")}
    cell: Cell | None = None
    with PeakMemory(runner.device) as memory:
        for index in range(args.warmup + args.repeat):
            runner.outputs.clear()  # the whole job every time; loaded models stay
            result = runner.run(graph, inputs=inputs, outputs=targets)
            progress.update()
            images = _images_per_run(result, targets)
            if cell is None:
                cell = Cell(size or _workflow_size(result, targets), sampler, images)
            if index < args.warmup:
                continue
            cell.seconds_per_image.append(result.report.seconds / images)
            split = {name: 0.0 for name in phases}
            for record in result.report.nodes:
                if record.status == "ran":
                    split[PHASES.get(record.type, "other")] += record.seconds
            split["other"] = max(result.report.seconds - sum(split.values()) + split["other"], 0.0)
            for name, seconds in split.items():
                phases[name].append(seconds / images)
    assert cell is not None
    cell.phases = {name: statistics.fmean(values) for name, values in phases.items()}
    cell.peak_memory_bytes = memory.peak
    return cell


class PeakMemory:
    """Peak memory while inside: CUDA memory reserved by torch, else the process's resident set
    (sampled every 5 ms from /proc; the lifetime peak where /proc is absent)."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.peak = 0
        self.kind = "cuda_reserved" if device.type == "cuda" else "rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.kind == "cuda_reserved":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        elif Path("/proc/self/statm").exists():
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.kind == "cuda_reserved":
            import torch

            self.peak = torch.cuda.max_memory_reserved(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
        else:
            scale = 1 if platform.system() == "Darwin" else 1024
            self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            self.peak = max(self.peak, rss_bytes(page))
            if self._stop.wait(0.005):
                return


def rss_bytes(page: int | None = None) -> int:
    """The resident set size of this process now, from /proc (Linux)."""
    page = page or os.sysconf("SC_PAGE_SIZE")
    return int(Path("/proc/self/statm").read_text().split()[1]) * page


def table(document: dict[str, Any]) -> str:
    """The latency table as text."""
    head = (
        f"{document['device']}, {document['dtype']}, torch {document['torch']}, {document['threads']} threads"
    )
    columns = ("size", "sampler", "mean s/img", "min s/img", "text", "denoise", "decode", "other", "peak MB")
    rows = [columns]
    for cell in document["results"]:
        phases = cell["phases"]
        rows.append(
            (
                cell["size"],
                cell["sampler"] or "-",
                f"{cell['mean_s']:.3f}",
                f"{cell['min_s']:.3f}",
                *(f"{phases[name]:.3f}" for name in ("text", "denoise", "decode", "other")),
                f"{cell['peak_memory_bytes'] / 2**20:.0f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(value.rjust(width) for value, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([head, *lines])


def _document(args: argparse.Namespace, runner: Any, results: list[Cell]) -> dict[str, Any]:
    import torch

    from sdflow.runner.devices.dtypes import dtype_name

    return {
        "workflow": args.workflow,
        "device": str(runner.device),
        "dtype": dtype_name(runner.dtype),
        "dtype_reason": runner.dtype_reason,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeat": args.repeat,
        "memory": "cuda_reserved" if runner.device.type == "cuda" else "rss",
        "results": [cell.to_dict() for cell in results],
    }


def _sizes(text: str | None) -> list[str]:
    sizes = []
    for item in _list(text):
        width, _, height = item.partition("x")
        if not (width.isdigit() and (height or width).isdigit()):
            raise UserError(
                f"--sizes {text}: expected sizes like 256,512 or 512x768", Location(field="--sizes")
            )
        sizes.append(f"{width}x{height or width}")
    return sizes


def _list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _samplers(text: str | None) -> list[str]:
    """--samplers as names, each one a sampler the Scheduler node knows (else exit 2 naming it)."""
    from sdflow.errors import suggestion
    from sdflow.nodes.ops.samplers import SAMPLERS

    names = _list(text)
    for name in names:
        if name not in SAMPLERS:
            more = suggestion(name, SAMPLERS, f" (samplers: {', '.join(SAMPLERS)})")
            raise UserError(f"--samplers: unknown sampler '{name}'{more}", Location(field="--samplers"))
    return names


def _nodes_of(graph: Any, type_name: str, option: str, wanted: list[str]) -> list[str]:
    ids = [node_id for node_id, spec in graph.nodes.items() if spec.type == type_name]
    if wanted and not ids:
        raise UserError(f"{option}: the workflow has no {type_name} node to set", Location(graph.file))
    return ids


def _configure(
    graph: Any, latents: list[str], schedulers: list[str], size: str | None, sampler: str | None
) -> None:
    if size is not None:
        width, height = (int(v) for v in size.split("x"))
        for node_id in latents:
            graph[node_id].set(width=width, height=height)
    if sampler is not None:
        for node_id in schedulers:
            graph[node_id]["sampler"] = sampler


def _targets(graph: Any) -> list[str]:
    """What the output nodes read (their files are not written while benchmarking)."""
    from sdflow.graphs.model import Link
    from sdflow.nodes import registry

    targets = []
    for spec in graph.nodes.values():
        if registry.get(spec.type).is_output:
            targets += [value.node for value in spec.fields.values() if isinstance(value, Link)]
    if not targets:
        raise UserError("the workflow has no output node (SaveImage) to measure", Location(graph.file))
    return sorted(set(targets))


def _images_per_run(result: Any, targets: list[str]) -> int:
    from sdflow.nodes.types import Image

    for target in targets:
        for value in result.outputs[target].values():
            if isinstance(value, Image):
                return int(value.pixels.shape[0])
    return 1


def _workflow_size(result: Any, targets: list[str]) -> str:
    from sdflow.nodes.types import Image

    for target in targets:
        for value in result.outputs[target].values():
            if isinstance(value, Image):
                return f"{value.size[0]}x{value.size[1]}"
    return "?"
