"""Opening a workflow file: YAML text, or a PNG picture that SaveImage wrote."""

from __future__ import annotations

from pathlib import Path

from sdflow.errors import Location, WorkflowError
from sdflow.formats.png import is_png
from sdflow.graphs.model import Workflow
from sdflow.graphs.picture import load_picture
from sdflow.graphs.yaml_io import loads


def load(path: str | Path) -> Workflow:
    """Load a workflow file (YAML, or a PNG written by SaveImage); raise WorkflowError naming file,
    line and column on any problem."""
    path = Path(path)
    if is_png(path):
        return load_picture(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError("workflow file not found", Location(str(path))) from None
    except UnicodeDecodeError:
        message = "not a workflow: neither UTF-8 YAML text nor a PNG that sdflow saved"
        raise WorkflowError(message, Location(str(path))) from None
    except OSError as exc:
        raise WorkflowError(f"cannot read workflow file: {exc}", Location(str(path))) from None
    return loads(text, str(path))
