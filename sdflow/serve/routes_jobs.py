"""The job routes: submit, list, show, cancel, rerun, reprioritize; pause and resume the queue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from sdflow.serve.bodies import Answer, ApiError, int_param, json_body, priority_of
from sdflow.serve.files import output_url
from sdflow.serve.queue import STATES, Job, JobQueue
from sdflow.serve.settings import Settings
from sdflow.serve.submission import Submission, read_submission
from sdflow.serve.validation import check_job, known


def _queue(request: Request) -> JobQueue:
    return request.app.state.queue


def publish_queue(state: Any) -> None:
    """Tell subscribers how many jobs wait and run, and whether the queue is paused."""
    counts = state.queue.active()
    state.hub.publish(
        "queue", queued=counts["queued"], running=counts["running"], paused=bool(counts["paused"])
    )


def accept(
    state: Any, job: Submission, queued: Callable[[list[tuple[str, int]]], None] | None = None
) -> list[tuple[str, int]]:
    """Validate every job of a submission like `sdflow validate` (422 with the located errors), then
    queue them (on disk before this returns) and wake the worker: [(id, position)]. ``queued`` is
    called with them before the worker can start one (what must be recorded first: a ComfyUI prompt's
    node ids). Blocking: call it in a thread. Other route modules (the ComfyUI routes) submit through
    this too."""
    settings: Settings = state.settings
    sandbox = settings.sandbox()
    plans = []
    for inputs in job.items:
        plan, errors = check_job(job.workflow, inputs, sandbox, settings.inputs, settings.allow_pickle)
        if errors:
            raise ApiError(422, "the workflow does not validate", errors=errors, inputs=inputs)
        plans.append(plan)
    accepted = state.queue.submit_many(job.workflow, job.items, job.priority, job.webhook, job.rerun_of)
    if queued is not None:
        queued(accepted)
    keep = getattr(state.worker, "keep", None)  # the in-process worker runs the plans as checked
    if keep is not None:
        for (job_id, _), plan in zip(accepted, plans, strict=True):
            keep(job_id, plan)
    for job_id, position in accepted:
        state.hub.publish("queued", job=job_id, position=position)
    publish_queue(state)
    if state.worker is not None:
        state.worker.notify()
    return accepted


async def accepted_soon(
    state: Any, job: Submission, queued: Callable[[list[tuple[str, int]]], None] | None = None
) -> list[tuple[str, int]]:
    """``accept`` from a route: on the event loop itself when that is quick (one job of a workflow
    text checked before, its commit written but not synced: about half a millisecond) and no job is
    running, since the hop to a worker thread and back costs more than that on a busy machine; in a
    thread otherwise (a new text's YAML parse, a sweep, ``--sync full``'s disk sync). While a job
    runs, its Python holds the GIL most of the time: requests accepted in threads then wait for
    it side by side instead of one after the other on the loop (half the p50 accept latency of 20
    clients submitting at once, measured)."""
    quiet = state.worker is None or getattr(state.worker, "idle", False)  # no job competes for the GIL
    if quiet and state.settings.sync == "normal" and len(job.items) == 1 and known(job.workflow):
        return accept(state, job, queued)
    return await run_in_threadpool(accept, state, job, queued)


def job_view(state: Any, job: Job) -> dict[str, Any]:
    """A job as GET /api/jobs/{id} shows it: its summary, per-node progress, files with their URLs."""
    view = job.summary()
    settings: Settings = state.settings
    live = state.worker.progress(job.id) if state.worker is not None else None
    if live is not None:
        view["nodes"] = live
    elif job.report:
        view["nodes"] = {
            n["id"]: {"type": n["type"], "state": n["status"], "seconds": n["seconds"]}
            for n in job.report.get("nodes", [])
        }
    else:
        view["nodes"] = {}
    view["files"] = [{"path": path, "url": output_url(settings.outputs, path)} for path in job.outputs or []]
    return view


async def submit_job(request: Request) -> Answer:
    job = await read_submission(request)
    accepted = await accepted_soon(request.app.state, job)
    (first, position), *_ = accepted
    answer: dict[str, Any] = {"id": first, "position": position}
    if len(accepted) > 1:
        answer["jobs"] = [{"id": job_id, "position": place} for job_id, place in accepted]
    return Answer(answer, status_code=201)


async def list_jobs(request: Request) -> Answer:
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise ApiError(422, f"'state' must be one of {', '.join(STATES)}")
    limit = int_param(request, "limit", 100, 1000)
    offset = int_param(request, "offset", 0, 2**62)
    jobs = await run_in_threadpool(_queue(request).list, state, limit, offset)
    return Answer({"jobs": [job.summary() for job in jobs], "limit": limit, "offset": offset})


async def _job(request: Request) -> Job:
    job = await run_in_threadpool(_queue(request).get, request.path_params["id"])
    if job is None:
        raise ApiError(404, f"no job '{request.path_params['id']}'")
    return job


async def get_job(request: Request) -> Answer:
    return Answer(job_view(request.app.state, await _job(request)))


async def cancel_job(request: Request) -> Answer:
    """A queued job leaves the queue (200); a running one stops at its next step boundary (202)."""
    job_id, state = request.path_params["id"], request.app.state
    if await run_in_threadpool(state.queue.cancel, job_id):
        state.hub.publish("cancelled", job=job_id)
        publish_queue(state)
        return Answer({"id": job_id, "state": "cancelled"})
    job = await _job(request)
    if job.state == "running" and state.worker is not None:
        state.worker.cancel(job_id)
        return Answer({"id": job_id, "state": "running", "cancelling": True}, status_code=202)
    raise ApiError(409, f"job '{job_id}' is {job.state}: it cannot be cancelled")


async def rerun_job(request: Request) -> Answer:
    """A new job with the same workflow, inputs, priority and webhook (checked again)."""
    job = await _job(request)
    again = Submission(job.workflow, [job.inputs], job.priority, job.webhook, rerun_of=job.id)
    [(job_id, position)] = await accepted_soon(request.app.state, again)
    return Answer({"id": job_id, "position": position, "rerun_of": job.id}, status_code=201)


async def change_job(request: Request) -> Answer:
    body = await json_body(request)
    if not isinstance(body, dict) or set(body) != {"priority"}:
        raise ApiError(422, 'body must be {"priority": INTEGER}')
    job_id, priority = request.path_params["id"], priority_of(body["priority"])
    queue = _queue(request)
    if await run_in_threadpool(queue.reprioritize, job_id, priority):
        return Answer((await _job(request)).summary())
    job = await _job(request)
    raise ApiError(409, f"job '{job_id}' is {job.state}: only a queued job's priority can change")


async def queue_status(request: Request) -> Answer:
    queue = _queue(request)
    counts = await run_in_threadpool(queue.counts)
    return Answer({"paused": await run_in_threadpool(lambda: queue.paused), "jobs": counts})


async def pause_queue(request: Request) -> Answer:
    """No new job starts (the running one finishes); kept across restarts."""
    return await _set_paused(request, True)


async def resume_queue(request: Request) -> Answer:
    return await _set_paused(request, False)


async def _set_paused(request: Request, paused: bool) -> Answer:
    state = request.app.state
    await run_in_threadpool(state.queue.pause, paused)
    await run_in_threadpool(publish_queue, state)
    if not paused and state.worker is not None:
        state.worker.notify()
    return await queue_status(request)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/jobs", submit_job, methods=["POST"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs/{id}", get_job, methods=["GET"]),
        Route("/api/jobs/{id}", cancel_job, methods=["DELETE"]),
        Route("/api/jobs/{id}", change_job, methods=["PATCH"]),
        Route("/api/jobs/{id}/rerun", rerun_job, methods=["POST"]),
        Route("/api/queue", queue_status, methods=["GET"]),
        Route("/api/queue/pause", pause_queue, methods=["POST"]),
        Route("/api/queue/resume", resume_queue, methods=["POST"]),
    ]
