"""Broken ComfyUI files — values of the wrong type, keys and list items missing — are UserErrors
(exit 2, one message), never tracebacks: random mutations of the fixtures, with a fixed seed."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from sdflow.errors import Location, UserError
from sdflow.formats.comfy_json import parse
from sdflow.interop.comfy import convert

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "comfy"
VALUES: list[Any] = [None, 0, -1, -2, 1.5, "x", "", [], {}, [1], ["9", 0], ["1", 7], ["1", -3], True, 10**30]
CASES = 400


def _containers(document: Any) -> list[Any]:
    found, todo = [], [document]
    while todo:
        item = todo.pop()
        if isinstance(item, dict | list):
            found.append(item)
            todo.extend(item.values() if isinstance(item, dict) else item)
    return found


def _mutate(document: Any, rng: random.Random) -> None:
    """Replace or delete one value somewhere in the document."""
    container = rng.choice([c for c in _containers(document) if c])
    key = rng.choice(list(container)) if isinstance(container, dict) else rng.randrange(len(container))
    if rng.random() < 0.3:
        del container[key]
    else:
        container[key] = copy.deepcopy(rng.choice(VALUES))


def test_mutated_workflows_convert_or_fail_with_a_user_error():
    documents = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]
    rng = random.Random(14)
    outcomes = {"converted": 0, "refused": 0}
    for _ in range(CASES):
        document = copy.deepcopy(rng.choice(documents))
        for _ in range(rng.randint(1, 3)):
            _mutate(document, rng)
        try:
            convert(parse(document, Location("fuzz.json")), "fuzz.json")
            outcomes["converted"] += 1
        except UserError as exc:
            assert str(exc).strip() and "Traceback" not in str(exc)
            outcomes["refused"] += 1
    assert outcomes["converted"] > 0 and outcomes["refused"] > 0  # both paths were exercised
