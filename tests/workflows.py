"""Workflow texts the tests share (txt2img, img2img, inpaint on the tiny models) and their pixels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sdflow.graphs import loads
from sdflow.runner import Runner

Fields = dict[str, Any]
DROP = object()  # as a field's value in a change: leave the field out

LOOP: Fields = {
    "type": "DenoiseLoop",
    "model": "!link ckpt.model",
    "positive": "!link positive",
    "negative": "!link negative",
    "latent": "!link noised",
    "cfg": "!input cfg",
}
PROMPTS: dict[str, Fields] = {
    "ckpt": {"type": "LoadCheckpoint", "checkpoint": '"builtin:tiny-sd15"'},
    "positive": {"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": "!input prompt"},
    "negative": {"type": "CLIPEncode", "clip": "!link ckpt.clip", "text": '""'},
}
SCHEDULE: Fields = {
    "type": "Scheduler",
    "model": "!link ckpt.model",
    "sampler": "!input sampler",
    "steps": "!input steps",
}
DECODE: Fields = {"type": "VAEDecode", "vae": "!link ckpt.vae", "latent": "!link denoised"}
SAVE: Fields = {"type": "SaveImage", "image": "!link decoded"}

TXT2IMG: dict[str, Fields] = {
    **PROMPTS,
    "empty": {"type": "EmptyLatent", "width": 64, "height": 64},
    "schedule": SCHEDULE,
    "noised": {
        "type": "AddNoise",
        "latent": "!link empty",
        "schedule": "!link schedule",
        "seed": "!input seed",
    },
    "denoised": LOOP,
    "decoded": DECODE,
}
IMG2IMG: dict[str, Fields] = {
    **PROMPTS,
    "picture": {"type": "LoadImage", "path": "!input image"},
    "encoded": {
        "type": "VAEEncode",
        "vae": "!link ckpt.vae",
        "image": "!link picture.image",
        "seed": "!input seed",
    },
    "schedule": SCHEDULE,
    "noised": {
        "type": "AddNoise",
        "latent": "!link encoded",
        "schedule": "!link schedule",
        "seed": None,
        "strength": "!input strength",
    },
    "denoised": LOOP,
    "decoded": DECODE,
}


def value(field: Any) -> str:
    """A field's YAML text: strings as written (quote them yourself), None as null, bools lower-case."""
    if field is None:
        return "null"
    if isinstance(field, bool):
        return "true" if field else "false"
    return str(field)


def render(nodes: dict[str, Fields], inputs: Fields | None = None, flow: bool = False) -> str:
    """A version-1 workflow: the inputs (if any), then each node's fields in order, in block style or
    with ``flow`` one ``name: {type: ..., field: value}`` line a node."""
    lines = ["version: 1"]
    if inputs:
        lines += ["inputs:", *(f"  {name}: {value(v)}" for name, v in inputs.items())]
    lines.append("nodes:")
    for name, fields in nodes.items():
        kept = [(key, value(v)) for key, v in fields.items() if v is not DROP]
        if flow:
            lines.append(f"  {name}: {{{', '.join(f'{key}: {text}' for key, text in kept)}}}")
        else:
            lines += [f"  {name}:", *(f"    {key}: {text}" for key, text in kept)]
    return "\n".join(lines) + "\n"


def changed(base: dict[str, Fields], changes: dict[str, Fields]) -> dict[str, Fields]:
    """``base`` with each named node's fields updated (new fields last, DROP as a field's value
    removes the field, as a node's its node); names not in ``base`` are new nodes, added at the end."""
    nodes = {name: dict(fields) for name, fields in base.items()}
    for name, fields in changes.items():
        if fields is DROP:
            del nodes[name]
        else:
            nodes[name] = {**nodes.get(name, {}), **fields}
    return nodes


def renamed(nodes: dict[str, Fields], names: dict[str, str]) -> dict[str, Fields]:
    """``nodes`` with the ids in ``names`` changed, and the links to them with them."""

    def relink(field: Any) -> Any:
        if isinstance(field, str) and field.startswith("!link "):
            target, _, output = field[6:].partition(".")
            return f"!link {names.get(target, target)}" + (f".{output}" if output else "")
        return field

    return {
        names.get(name, name): {k: relink(v) for k, v in fields.items()} for name, fields in nodes.items()
    }


def prefixed(nodes: dict[str, Fields], prefix: str) -> dict[str, Fields]:
    """``nodes`` renamed ``prefix + name``, their links to each other renamed with them (links to
    nodes outside stay)."""
    return renamed(nodes, {name: prefix + name for name in nodes})


def txt2img(
    inputs: Fields | None = None, *, save: bool = False, flow: bool = False, **changes: Fields
) -> str:
    """The tiny SD 1.5 txt2img graph (64x64, prompt/steps/sampler/seed/cfg read from inputs), with
    ``changes`` applied and a SaveImage node ``save`` when asked."""
    base = {**TXT2IMG, "save": SAVE} if save else TXT2IMG
    return render(changed(base, changes), inputs, flow)


def denoise_twice(
    names: tuple[str, str],
    against: str,
    /,
    inputs: Fields | None = None,
    cfg: Any = "!input cfg",
    **changes: Fields,
) -> str:
    """The txt2img graph's noised latent denoised twice and not decoded (flow style): ``names[0]``
    against ``negative``, ``names[1]`` against the node named ``against`` (given in ``changes``)."""
    loops = {names[0]: {**LOOP, "cfg": cfg}, names[1]: {**LOOP, "negative": f"!link {against}", "cfg": cfg}}
    return txt2img(inputs, flow=True, denoised=DROP, decoded=DROP, **changes, **loops)


def img2img(inputs: Fields | None = None, *, flow: bool = False, **changes: Fields) -> str:
    """The tiny SD 1.5 img2img graph: LoadImage ``picture`` -> VAEEncode ``encoded`` -> AddNoise with
    strength (image/seed/strength/steps/sampler/cfg read from inputs), with ``changes`` applied."""
    return render(changed(IMG2IMG, changes), inputs, flow)


def inpaint(inputs: Fields | None = None, **changes: Fields) -> str:
    """img2img with a LoadMask ``mask`` (path read from the input ``mask``) given to VAEEncode."""
    with_mask = changed(IMG2IMG, {"encoded": {"mask": "!link mask"}})
    nodes = {}
    for name, fields in with_mask.items():
        nodes[name] = fields
        if name == "picture":
            nodes["mask"] = {"type": "LoadMask", "path": "!input mask"}
    return render(changed(nodes, changes), inputs)


def copy_image(prefix: str) -> str:
    """LoadImage ``picture`` (path from the input ``path``, "a.png" by default) -> SaveImage ``save``
    with ``prefix``: a workflow that draws nothing."""
    nodes = {
        "picture": {"type": "LoadImage", "path": "!input path"},
        "save": {"type": "SaveImage", "image": "!link picture.image", "filename_prefix": prefix},
    }
    return render(nodes, {"path": '"a.png"'}, flow=True)


def decoded_pixels(
    runner: Runner, text: str, inputs: Fields | None = None, node: str = "decoded"
) -> np.ndarray:
    """A VAEDecode node's pixels after running ``text``, as (batch, height, width, 3) like diffusers'
    numpy output."""
    result = runner.run(loads(text, "workflow.yaml"), inputs=inputs or {}, outputs=[node])
    return result[f"{node}.image"].pixels.permute(0, 2, 3, 1).numpy()


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference of two arrays of the same shape."""
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


PATCH_INPUTS: Fields = {
    "prompt": '{type: str, default: "a red circle"}',
    "steps": "{type: int, default: 6}",
    "sampler": "{type: str, default: euler}",
    "seed": "{type: int, default: 4}",
    "cfg": "{type: float, default: 5.0}",
}


def patched_beside_plain(name: str, patch: Fields, inputs: Fields) -> str:
    """txt2img's noised latent denoised twice, not decoded (flow style): ``fast`` by the model patch
    node ``name`` (``patch``'s fields) and ``plain`` by the checkpoint's own model."""
    loops = {name: patch, "fast": {**LOOP, "model": f"!link {name}"}, "plain": LOOP}
    return txt2img({**PATCH_INPUTS, **inputs}, flow=True, denoised=DROP, decoded=DROP, **loops)


COMFY_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"
SHAPES_COMFY: dict[str, Fields] = {  # tests/fixtures/comfy/txt2img_api.json on the tiny shapes model, 2 steps
    "4": {"ckpt_name": "builtin:shapes"},
    "5": {"width": 64, "height": 64},
    "3": {"steps": 2, "cfg": 4.0, "sampler_name": "ddim"},
}


def comfy_api(changes: dict[str, Fields], name: str = "txt2img_api.json") -> dict[str, Any]:
    """A ComfyUI API-format fixture with some nodes' inputs changed ({node id: {input: value}})."""
    document = json.loads((COMFY_FIXTURES / name).read_text())
    for node_id, inputs in changes.items():
        document[node_id]["inputs"].update(inputs)
    return document


# -- picture-prompted graphs (IP-Adapter, unCLIP) and their diffusers references -----------------

PICTURE_PROMPT = "a red circle on a blue background"
PICTURE_NEGATIVE = "blurry"
PICTURE_STEPS, PICTURE_CFG, PICTURE_SEED = 6, 5.0, 3


def picture_graph(checkpoint: str, inputs: dict[str, Any], nodes: str, model: str, positive: str) -> str:
    """The tiny 64x64 ddim txt2img graph (prompt and negative above) with ``nodes`` (YAML lines) added
    and its DenoiseLoop reading ``model`` and ``positive``; ``inputs`` are its workflow inputs."""
    declared = "".join(f"  {name}: {value!r}\n" for name, value in inputs.items()).replace("'", '"')
    return f"""
version: 1
inputs:
{declared}nodes:
  ckpt: {{type: LoadCheckpoint, checkpoint: "{checkpoint}"}}
  positive: {{type: CLIPEncode, clip: !link ckpt.clip, text: "{PICTURE_PROMPT}"}}
  negative: {{type: CLIPEncode, clip: !link ckpt.clip, text: "{PICTURE_NEGATIVE}"}}
  schedule: {{type: Scheduler, model: !link ckpt.model, sampler: ddim, steps: {PICTURE_STEPS}}}
  empty: {{type: EmptyLatent, width: 64, height: 64}}
  noised: {{type: AddNoise, latent: !link empty, schedule: !link schedule, seed: {PICTURE_SEED}}}
{nodes}
  denoised: {{type: DenoiseLoop, model: !link {model}, positive: !link {positive},
             negative: !link negative, latent: !link noised, cfg: {PICTURE_CFG}}}
  decoded: {{type: VAEDecode, vae: !link ckpt.vae, latent: !link denoised}}
"""


def picture_pipeline_call(pipe: Any, seed: int = PICTURE_SEED, **kwargs: Any) -> np.ndarray:
    """``pipe``'s numpy output for ``picture_graph``'s prompt, steps, cfg and 64x64 size."""
    import torch

    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=PICTURE_PROMPT,
        negative_prompt=PICTURE_NEGATIVE,
        num_inference_steps=PICTURE_STEPS,
        guidance_scale=PICTURE_CFG,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        height=64,
        width=64,
        **kwargs,
    ).images


def comfy_converted(comfy: dict[str, Any]) -> tuple[Any, str]:
    """An API-format ComfyUI graph converted: (the conversion, its YAML), the YAML validated."""
    from sdflow.errors import Location
    from sdflow.formats.comfy_json import parse
    from sdflow.graphs.validate import validate
    from sdflow.graphs.yaml_io import dumps
    from sdflow.interop.comfy import convert

    conversion = convert(parse(comfy, Location("api.json")), "api.json", None)
    text = dumps(conversion.workflow)
    validate(loads(text, "converted.yaml"))
    return conversion, text


def spec_of_type(workflow: Any, kind: str) -> Any:
    """The one node of type ``kind`` in a workflow."""
    [spec] = [s for s in workflow.nodes.values() if s.type == kind]
    return spec
