"""RayBackend: jobs spread over Ray actors, each a long-lived Runner with warm caches.

The driver computes every job's cache keys, hands each free worker the job that shares most with
what it already ran (``schedule``), and keeps two jobs queued per worker so none waits on the round
trip. A worker that dies has its jobs retried on another (a fresh replacement joins the pool), up
to ``max_retries`` times per job. Ray is imported only here, and only when a backend starts.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import Any

from sdflow.errors import Location, UserError
from sdflow.runner.core.events import Listener
from sdflow.runner.scale.jobs import Failure, Job
from sdflow.runner.scale.many import Completed, Task
from sdflow.runner.scale.schedule import AffinityScheduler
from sdflow.runner.scale.worker import Worker

INSTALL = 'pip install -e ".[ray]"'
QUEUED_PER_WORKER = 2
# Passed on to workers, which on a real cluster do not share the driver's environment.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "TRANSFORMERS_OFFLINE")


class RayMissing(UserError):
    """``--workers`` / RayBackend without Ray installed."""


def import_ray() -> Any:
    """The ray module, or a RayMissing error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"running on workers needs Ray: {INSTALL}", Location(field="--workers")) from None
    return ray


class RayBackend:
    """Runs jobs on ``workers`` Ray actors; connects to ``address`` or starts a local Ray."""

    def __init__(
        self,
        workers: int,
        address: str | None = None,
        device: str = "auto",
        dtype: str | None = None,
        cpus_per_worker: int = 1,
        max_retries: int = 2,
        worker_listeners: Iterable[Listener] = (),
        allow_pickle: bool = False,
    ) -> None:
        if workers < 1:
            raise UserError(f"needs at least 1 worker, got {workers}", Location(field="--workers"))
        self.ray = import_ray()
        self.size, self.address, self.device, self.dtype = workers, address, device, dtype
        self.cpus_per_worker, self.max_retries = cpus_per_worker, max_retries
        self.worker_listeners = list(worker_listeners)
        self.allow_pickle = allow_pickle  # the workers may load pickle weight files (--allow-pickle)
        self.actors: dict[str, Any] = {}
        self._started_ray = False
        self._count = 0
        self._replacements = 0
        self._gpus = 0

    # -- the pool -------------------------------------------------------------------------------

    def start(self) -> RayBackend:
        """Connect to (or start) Ray and create the workers; called by ``map`` if not done before."""
        ray = self.ray
        if not ray.is_initialized():
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": "warning"}
            if self.address is None:
                options["num_cpus"] = max(os.cpu_count() or 1, self.size * self.cpus_per_worker)
            try:
                ray.init(address=self.address, **options)
            except ConnectionError as exc:
                raise UserError(f"cannot connect to Ray: {exc}", Location(field="--ray-address")) from None
            self._started_ray = True
        self._gpus = self._gpus_per_worker(ray.cluster_resources())
        while len(self.actors) < self.size:
            self._add_worker()
        return self

    def _gpus_per_worker(self, resources: dict[str, float]) -> int:
        """One GPU per worker where the cluster has GPUs (and the device allows); refuse a pool the
        cluster cannot hold, whose extra workers would wait forever."""
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        where = Location(field="--workers")
        if self.device == "cuda" and gpus == 0:
            raise UserError("device 'cuda' was asked for, but the Ray cluster has no GPU", where)
        per_worker = 1 if self.device in ("auto", "cuda") and gpus > 0 else 0
        if per_worker and self.size > gpus:
            raise UserError(f"{self.size} workers need a GPU each; the Ray cluster has {gpus}", where)
        if self.size * self.cpus_per_worker > cpus:
            needed = self.size * self.cpus_per_worker
            raise UserError(f"{self.size} workers need {needed} CPUs; the Ray cluster has {cpus}", where)
        return per_worker

    def close(self) -> None:
        """Stop the workers (their caches go with them), and Ray if this backend started it."""
        for actor in self.actors.values():
            self.ray.kill(actor, no_restart=True)
        self.actors.clear()
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> RayBackend:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _add_worker(self) -> str:
        self._count += 1
        name = f"worker-{self._count}"
        environment = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith("SDFLOW_")}
        actor_class = self.ray.remote(
            num_cpus=self.cpus_per_worker,
            num_gpus=self._gpus,
            max_restarts=0,
            runtime_env={"env_vars": environment},
        )(Worker)
        options = (self.cpus_per_worker, self.worker_listeners, self.allow_pickle)
        self.actors[name] = actor_class.remote(name, self.device, self.worker_dtype(), *options)
        return name

    def worker_dtype(self) -> str | None:
        """The dtype the workers compute in: on CPU workers an 'auto' is settled here, once, as this
        process settles it (the bf16 probe measured in one place), so every worker of a sweep and a
        serial run on this machine compute alike, whatever load each worker's own probe would meet."""
        if self.device != "cpu" or (self.dtype or "auto") != "auto":
            return self.dtype
        import torch

        from sdflow.runner.devices.dtypes import choose_dtype, dtype_name

        return dtype_name(choose_dtype(torch.device("cpu"), "auto").dtype)

    def lose(self, name: str) -> None:
        """Forget a dead worker; a replacement joins while the retry budget allows."""
        self._lose(name)

    def _lose(self, name: str) -> None:
        """Forget a dead worker; a replacement joins while the retry budget allows."""
        actor = self.actors.pop(name, None)
        if actor is not None:
            self.ray.kill(actor, no_restart=True)
        if self._replacements < self.size * self.max_retries:
            self._replacements += 1
            self._add_worker()

    # -- running --------------------------------------------------------------------------------

    def map(self, task: Task, jobs: Sequence[Job]) -> Generator[Completed, None, None]:
        """Run ``task(runner, job)`` for every job on the workers; yield each as it completes."""
        self.start()
        keys, refused = _keys(jobs, self.allow_pickle)
        yield from refused
        scheduler = AffinityScheduler(keys)
        shared = {id(job.workflow): job.workflow for job in jobs}
        workflows = {key: self.ray.put(workflow) for key, workflow in shared.items()}
        tries = [0] * len(jobs)
        running: dict[Any, tuple[str, int]] = {}  # object ref -> (worker, job)
        try:
            while True:
                self._submit(task, jobs, workflows, scheduler, running, tries)
                if not running:
                    break
                [ref], _ = self.ray.wait(list(running), num_returns=1)
                name, index = running.pop(ref)
                try:
                    value = self.ray.get(ref)
                except (self.ray.exceptions.RayActorError, self.ray.exceptions.ActorUnschedulableError):
                    yield from self._worker_died(name, index, scheduler, running, tries)
                    continue
                except self.ray.exceptions.RayError as exc:
                    value = Failure(f"internal error on {name}: {type(exc).__name__}", "bug", str(exc))
                report = getattr(value, "report", None)
                if report is not None:
                    scheduler.measured({n.id: n.seconds for n in report.nodes if n.status == "ran"})
                yield Completed(index, value, name, tries[index])
            for index in scheduler.pending:  # no worker left to take them
                message = f"no worker left to run it (workers died {self._replacements} times)"
                yield Completed(index, Failure(message, "cluster"), "-", tries[index])
        except BaseException:  # Ctrl-C, or the caller stopped early: stop the cluster's work now
            for actor in self.actors.values():
                self.ray.kill(actor, no_restart=True)
            self.actors.clear()
            raise

    def _submit(self, task, jobs, workflows, scheduler, running, tries) -> None:
        """Top every worker up to QUEUED_PER_WORKER jobs, one round of the workers per slot."""
        for slot in range(QUEUED_PER_WORKER):
            for name in list(self.actors):
                scheduler.add_worker(name)
                if sum(1 for worker, _ in running.values() if worker == name) > slot:
                    continue
                index = scheduler.next_for(name)
                if index is None:
                    continue
                job = jobs[index]
                tries[index] += 1
                ref = self.actors[name].run.remote(
                    task, workflows[id(job.workflow)], job.inputs, job.outputs, job.output_dir
                )
                running[ref] = (name, index)

    def _worker_died(self, name, index, scheduler, running, tries) -> Iterator[Completed]:
        """Requeue the dead worker's jobs (or fail the one out of retries) and replace the worker."""
        queued = [i for worker, i in running.values() if worker == name]
        for ref in [ref for ref, (worker, _) in running.items() if worker == name]:
            del running[ref]
        scheduler.remove_worker(name)
        self._lose(name)
        for other in queued:  # waiting behind the job that was running: not an attempt
            tries[other] -= 1
            scheduler.retry(other, name)
        if tries[index] > self.max_retries:
            message = f"its worker died on each of {tries[index]} attempts (last: {name})"
            yield Completed(index, Failure(message, "cluster"), name, tries[index])
        else:
            scheduler.retry(index, name)


def _keys(jobs: Sequence[Job], allow_pickle: bool) -> tuple[list[dict[str, str] | None], list[Completed]]:
    """Every job's cache keys by node id, computed here; jobs that fail to plan come back refused."""
    from sdflow.runner.core.executor import Runner

    planner = Runner(
        device="cpu", allow_pickle=allow_pickle
    )  # keys differ from a GPU worker's, but alike for every job
    keys: list[dict[str, str] | None] = []
    refused = []
    for index, job in enumerate(jobs):
        try:
            keys.append(planner.keys(job.workflow, job.inputs, job.outputs, job.output_dir))
        except UserError as exc:
            keys.append(None)
            refused.append(Completed(index, Failure(str(exc), "user"), "driver", 0))
    return keys, refused
