"""Fuzzing: mutated example workflows fail only as UserError, and `sdflow validate` on them exits 2
with located one-line messages, never a traceback.

Deterministic in CI (a fixed seed, a bounded number of examples); run it longer with
``SDFLOW_FUZZ_EXAMPLES=20000 python -m pytest tests/test_fuzz_workflows.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdflow.cli import main
from sdflow.errors import UserError
from sdflow.graphs.validate import validate
from sdflow.graphs.yaml_io import loads
from sdflow.runner.core.plan import check

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
TEXTS = [(path, path.read_text(encoding="utf-8")) for path in EXAMPLES]
FUZZ_EXAMPLES = int(os.environ.get("SDFLOW_FUZZ_EXAMPLES", "400"))

TOKENS = [
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "? ",
    "|",
    ">",
    "'",
    '"',
    "#",
    "\t",
    "\n",
    "  ",
    "---\n",
    "...\n",
    "%YAML 1.1\n",
    "&a ",
    "*a",
    "&anchor {type: EmptyLatent}",
    "<<: *a",
    "<<: *anchor",
    "!!python/object:os.system ",
    "!!python/object/apply:os.system [ls]",
    "!!python/name:os.system",
    "!!binary aGVsbG8=",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!!float ",
    "!!map ",
    "!!seq ",
    "!!set ",
    "!!omap ",
    "!!timestamp ",
    "!!null ",
    "!!bool ",
    "!link ",
    "!input ",
    "!link a.b",
    "!input x",
    "!unknown ",
    "~",
    "null",
    "true",
    "-1",
    "1e309",
    "9" * 40,
    "0x1F",
    ".nan",
    ".inf",
    "2001-12-14",
    "\x00",
    "\x99",
    "\ufeff",
    "\u2028",
    "\ud7ff",
    "é",
    "🙂",
]


def _mutate(text: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["delete", "duplicate", "swap", "token", "unicode", "truncate"]))
    lines = text.splitlines(keepends=True)
    if kind in ("delete", "duplicate", "swap") and len(lines) > 1:
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(j, lines[i])
        else:
            lines[i], lines[j] = lines[j], lines[i]
        return "".join(lines)
    at = data.draw(st.integers(0, len(text)))
    if kind == "truncate":
        return text[:at]
    if kind == "token":
        insert = data.draw(st.sampled_from(TOKENS))
    else:
        insert = data.draw(st.text(min_size=1, max_size=3))
    replace = data.draw(st.integers(0, 4))  # sometimes overwrite a few characters
    return text[:at] + insert + text[at + replace :]


def _load_and_check(text: str, file: str) -> None:
    """What `sdflow validate` does with the text, through the library."""
    workflow = loads(text, file)
    validate(workflow)
    if not any(spec.required for spec in workflow.inputs.values()):
        check(workflow, {})


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_mutated_workflows_fail_only_as_located_user_errors(data: st.DataObject) -> None:
    source, text = data.draw(st.sampled_from(TEXTS))
    for _ in range(data.draw(st.integers(1, 3))):
        text = _mutate(text, data)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / source.name
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        # Relative paths in the workflow (input pictures) must still point at the examples' inputs.
        (Path(folder) / "inputs").symlink_to(source.parent / "inputs")
        with contextlib.suppress(UserError):
            _load_and_check(text, str(path))
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["validate", str(path)])
    assert code in (0, 2), err.getvalue()
    lines = err.getvalue().splitlines()
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert lines and all(line.startswith("error: ") for line in lines), lines
        assert all(str(path) in line or "--" in line for line in lines), lines


def test_a_line_separator_in_a_value_stays_on_the_messages_line(tmp_path: Path, capsys) -> None:
    text = dict((p.name, t) for p, t in TEXTS)["txt2img.yaml"]  # no input files: the checkpoint is the fault
    path = tmp_path / "workflow.yaml"
    path.write_text(text.replace('"builtin:shapes"', '"\\u2028builtin:shapes"'), encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {path}:") and "\\u2028builtin:shapes" in line
