"""Render docs/samplers.md's grids: the shapes model's txt2img picture for every sampler x schedule
(Scheduler `sampler` x `sigmas`), one cell each; a pair sdflow refuses is a grey cell with a cross.

Run: python tools/sampler_grid.py   (a few minutes on a CPU; writes docs/gallery/sampler_grid.png)
     python tools/sampler_grid.py --mode comfy   (comfy mode's samplers x ComfyUI's schedules:
     docs/gallery/sampler_grid_comfy.png)
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import sdflow
from sdflow.errors import SdflowError
from sdflow.nodes.ops.comfy_tables import COMFY_NAMES
from sdflow.nodes.ops.samplers import SamplerName, SigmasName
from sdflow.nodes.ops.sigma_schedules import COMFY_SCHEDULES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "gallery" / "sampler_grid.png"
CELL, LABEL_W, LABEL_H = 64, 112, 40
STEPS, TURBO_STEPS = 20, 4
INPUTS = {"prompt": "a red circle on a blue background", "seed": 42, "cfg": 4.0}
GREY, INK = (200, 200, 200), (0, 0, 0)
PALETTE = 128  # colours: a third of the bytes of full RGB, the shapes' flat colours unharmed


def workflow(mode: str) -> sdflow.Workflow:
    """examples/txt2img.yaml with the Scheduler's sigmas as an input too, in ``mode``."""
    text = (ROOT / "examples" / "txt2img.yaml").read_text()
    text = text.replace("  sampler: ddim\n", "  sampler: ddim\n  sigmas: default\n")
    text = text.replace(
        "    steps: !input steps\n", f"    steps: !input steps\n    sigmas: !input sigmas\n    mode: {mode}\n"
    )
    return sdflow.loads(text, "sampler_grid.yaml")


def cell(runner: sdflow.Runner, graph: sdflow.Workflow, sampler: str, sigmas: str) -> Image.Image:
    """The picture of one pair, or a grey cell with a cross where sdflow refuses the pair."""
    steps = TURBO_STEPS if sigmas == "sd_turbo" else STEPS
    inputs = {**INPUTS, "sampler": sampler, "sigmas": sigmas, "steps": steps}
    try:
        picture = runner.run(graph, inputs=inputs, outputs=["decoded"]).image("decoded")
    except SdflowError:
        picture = Image.new("RGB", (CELL, CELL), GREY)
        draw = ImageDraw.Draw(picture)
        draw.line((16, 16, CELL - 16, CELL - 16), fill=INK, width=2)
        draw.line((16, CELL - 16, CELL - 16, 16), fill=INK, width=2)
    return picture.convert("RGB").resize((CELL, CELL), Image.NEAREST)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    mode = "comfy" if argv[:2] == ["--mode", "comfy"] else "diffusers"
    if mode == "comfy":
        samplers, schedules = list(COMFY_NAMES), [*COMFY_SCHEDULES, "linear_quadratic", "kl_optimal"]
    else:
        samplers = [name for name in typing.get_args(SamplerName) if name != "dpmpp_2m_karras"]
        schedules = list(typing.get_args(SigmasName))
    out = OUT.with_name("sampler_grid_comfy.png") if mode == "comfy" else OUT
    runner = sdflow.Runner(device="cpu", dtype="fp32")
    graph = workflow(mode)
    grid = Image.new("RGB", (LABEL_W + CELL * len(schedules), LABEL_H + CELL * len(samplers)), "white")
    draw = ImageDraw.Draw(grid)
    for column, sigmas in enumerate(schedules):
        x = LABEL_W + column * CELL + 2
        draw.text((x, 4 + (column % 2) * 16), sigmas, fill=INK)
    for row, sampler in enumerate(samplers):
        y = LABEL_H + row * CELL
        draw.text((4, y + CELL // 2 - 6), sampler, fill=INK)
        for column, sigmas in enumerate(schedules):
            grid.paste(cell(runner, graph, sampler, sigmas), (LABEL_W + column * CELL, y))
        print(sampler, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(colors=PALETTE, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
