"""Workflows embedded in PNG pictures: SaveImage writes the workflow, the run's inputs and the
folder its relative paths resolved against as text chunks; loading the picture gives them back."""

from __future__ import annotations

import json
from pathlib import Path

from sdflow.errors import Location, WorkflowError
from sdflow.formats.infotext import INFOTEXT_KEY
from sdflow.formats.png import text_chunks
from sdflow.graphs.model import Workflow
from sdflow.graphs.yaml_io import loads

WORKFLOW_KEY = "sdflow:workflow"
INPUTS_KEY = "sdflow:inputs"
BASE_KEY = "sdflow:base"
COMFY_KEYS = ("prompt", "workflow")


def load_picture(path: str | Path) -> Workflow:
    """The workflow a picture was made with, its inputs set to the values of that run.

    Relative paths in it resolve against the folder recorded when it ran (``sdflow:base``) while
    that folder exists, else against the picture's own folder (a picture shipped with its inputs).
    """
    chunks = text_chunks(path)
    where = Location(str(path))
    if WORKFLOW_KEY not in chunks:
        raise WorkflowError(_no_workflow(chunks, str(path)), where)
    workflow = loads(chunks[WORKFLOW_KEY], f"{path}[{WORKFLOW_KEY}]")
    try:
        values = json.loads(chunks.get(INPUTS_KEY, "{}"))
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"the '{INPUTS_KEY}' text is not JSON: {exc}", where) from None
    if not isinstance(values, dict):
        raise WorkflowError(f"the '{INPUTS_KEY}' text is not a JSON object", where)
    for name, value in values.items():
        spec = workflow.inputs.get(name)
        if spec is None:
            raise WorkflowError(f"the picture's inputs name '{name}', which its workflow lacks", where)
        try:
            spec.default, spec.required = spec.check(value), False
        except ValueError as exc:
            raise WorkflowError(f"the picture's inputs: {exc}", where) from None
    recorded = chunks.get(BASE_KEY)
    if recorded and Path(recorded).is_dir():
        workflow.base_dir = recorded
    else:
        workflow.base_dir = str(Path(path).resolve().parent)
    return workflow


def _no_workflow(chunks: dict[str, str], path: str) -> str:
    if any(key in chunks for key in COMFY_KEYS):
        return (
            "this picture holds a ComfyUI workflow, not an sdflow one: convert it with "
            f"`sdflow import comfy {path} -o workflow.yaml`, then run workflow.yaml"
        )
    if INFOTEXT_KEY in chunks:
        return (
            "this picture holds A1111 generation parameters, not an sdflow workflow: import them "
            f"with `sdflow import a1111 {path} -o workflow.yaml`, then run workflow.yaml"
        )
    return "this PNG holds no sdflow workflow (pictures written by sdflow's SaveImage do)"
