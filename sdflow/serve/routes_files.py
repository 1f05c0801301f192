"""File and catalogue routes: outputs (only from the output folder), uploads (only into the input
folder), the node types and the models in the model folders."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Route

from sdflow.serve.bodies import Answer, ApiError, read_body
from sdflow.serve.files import output_file, save_upload, upload_name
from sdflow.serve.nodes_json import node_types
from sdflow.serve.settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_output(request: Request) -> FileResponse:
    """A file under the output folder; anything else (traversal, absolute, missing) is 404."""
    relative = request.path_params["path"]
    found = await run_in_threadpool(output_file, _settings(request).outputs, relative)
    if found is None:
        raise ApiError(404, f"no output file '{relative}'")
    return FileResponse(found)


async def upload(request: Request) -> Answer:
    """An input picture into the input folder: multipart (field ``file``) or the raw body with
    ``?filename=NAME``; never over an earlier upload (a new name instead). Answers the name a
    workflow uses for it (relative paths in API jobs resolve in the input folder)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=2)
        except ApiError:
            raise
        except Exception as exc:  # the multipart parser's errors
            raise ApiError(400, f"malformed multipart form: {exc}") from None
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ApiError(422, "the form needs a file field named 'file'")
        filename, data = part.filename or "", await part.read()
        await form.close()
    else:
        filename, data = request.query_params.get("filename", ""), await read_body(request)
    name = upload_name(filename)
    if name is None:
        raise ApiError(422, "the upload needs a file name (the part's filename, or ?filename=NAME)")
    if not data:
        raise ApiError(422, "the upload is empty")
    saved = await run_in_threadpool(save_upload, _settings(request).inputs, name, data)
    return Answer({"name": saved.name, "size": len(data)}, status_code=201)


def models_json() -> dict[str, Any]:
    """What `sdflow models` lists: per kind, its folders and models (name, path, description)."""
    from sdflow.models import folders
    from sdflow.models.describe import describe

    kinds = {}
    for kind in folders.KINDS:
        models = folders.list_models(kind)
        kinds[kind] = {
            "folders": [str(p) for p in folders.kind_folders(kind)],
            "models": [
                {"name": m.name, "path": str(m.path), "about": describe(kind, m.path)} for m in models
            ],
        }
    return {"roots": [str(root) for root in folders.roots()], "kinds": kinds}


async def list_models(request: Request) -> Answer:
    return Answer(await run_in_threadpool(models_json))


async def list_nodes(request: Request) -> Answer:
    return Answer({"nodes": await run_in_threadpool(node_types)})


def routes() -> list[BaseRoute]:
    return [
        Route("/api/outputs/{path:path}", get_output, methods=["GET"]),
        Route("/api/uploads", upload, methods=["POST"]),
        Route("/api/models", list_models, methods=["GET"]),
        Route("/api/nodes", list_nodes, methods=["GET"]),
    ]
