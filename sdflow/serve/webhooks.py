"""Webhooks: a job's URL is POSTed its summary as JSON when it ends, off the worker's thread; a
failing receiver is logged, never more."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger("sdflow.serve")


def webhook_problem(url: Any) -> str | None:
    """Why ``url`` cannot be a webhook (not a string, not http(s), no host), or None."""
    if not isinstance(url, str) or len(url) > 2000:
        return "'webhook' must be an http:// or https:// URL"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "'webhook' must be an http:// or https:// URL"
    return None


class Webhooks:
    """Calls webhooks, each on its own short-lived thread, with a ``timeout`` in seconds."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._threads: list[threading.Thread] = []

    def call(self, url: str, payload: dict[str, Any]) -> threading.Thread:
        thread = threading.Thread(target=self.post, args=(url, payload), name="sdflow-webhook", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def post(self, url: str, payload: dict[str, Any]) -> bool:
        """POST ``payload``; True on a 2xx answer, False (logged) on anything else."""
        body = json.dumps({"event": "job." + str(payload.get("state")), "job": payload}, default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                ok = 200 <= answer.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("webhook %s for job %s failed: %s", url, payload.get("id"), exc)
            return False
        if not ok:
            log.warning("webhook %s for job %s answered %s", url, payload.get("id"), answer.status)
        return ok

    def join(self, timeout: float | None = None) -> None:
        """Wait for the calls under way (tests, shutdown)."""
        for thread in self._threads:
            thread.join(timeout)
