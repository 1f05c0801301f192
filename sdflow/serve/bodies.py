"""Reading request bodies: JSON up to the server's --max-body, and the error a refused request raises."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request


class ApiError(Exception):
    """A request the API refuses: an HTTP status and a JSON body."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


async def json_body(request: Request) -> Any:
    """The request's JSON, read up to ``max_body`` bytes (413 beyond), 400 when it does not parse."""
    limit: int = request.app.state.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "body is JSON nested too deeply") from None
