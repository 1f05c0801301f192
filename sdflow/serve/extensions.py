"""Routes other packages add to the server: each module named here, when it exists, has
``routes() -> list[starlette.routing.BaseRoute]``, added after the native /api routes (so a page
mounted at "/" comes last). Their handlers reach the server through ``request.app.state``:
``settings`` (serve.settings.Settings), ``queue`` (JobQueue), ``hub`` (EventHub), ``worker``
(None when not running jobs); they submit with ``serve.routes_jobs.accept``."""

from __future__ import annotations

import importlib

from starlette.routing import BaseRoute

MODULES = ("sdflow.serve.comfy_routes", "sdflow.serve.web_routes")


def routes() -> list[BaseRoute]:
    found: list[BaseRoute] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not installed (yet): the server runs without it
                continue
            raise
        found += module.routes()
    return found
