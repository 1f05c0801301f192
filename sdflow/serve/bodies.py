"""Reading requests: the API's error type, JSON bodies, query integers and typed fields."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


async def read_body(request: Request) -> bytes:
    """The whole body (the size limit is enforced as it is read, see ``app.BodyLimit``)."""
    chunks = [chunk async for chunk in request.stream()]
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    """The request's JSON; 400 when it does not parse."""
    return parse_json(await read_body(request))


def parse_json(data: bytes | str) -> Any:
    try:
        return json.loads(data, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "body is JSON nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ApiError(400, f"body is not valid JSON: {name} is not a JSON number")


def int_param(request: Request, name: str, default: int, top: int) -> int:
    """A query parameter from 0 to ``top``; 422 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) > top:
        raise ApiError(422, f"'{name}' must be an integer from 0 to {top}")
    return int(raw)


def priority_of(value: Any) -> int:
    """A job priority from JSON: an integer (higher runs first), else 422."""
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**62:
        raise ApiError(422, "'priority' must be an integer")
    return value


class Answer(JSONResponse):
    """A JSON answer, non-ASCII escaped: any text a client sent (lone surrogates too) can be echoed."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")
