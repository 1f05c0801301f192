"""Which job a free worker takes next: the one whose cached nodes it already holds.

Every job comes with the cache key of each node it runs (``Runner.keys``). A worker holds the keys
of the jobs it was given. A free worker takes the pending job that saves it the most work (the cost
of the nodes it holds already) and, among those, the one that shares least with the other workers,
so jobs that share a prompt, a mask or an upscaled latent gather on one worker while a seed sweep
still spreads over all. A node's cost is the seconds it last took when it ran (1 until measured).
Ties go to the earliest job, so the order is deterministic. A job repeating one another worker
holds (every key the same) is left to that worker, where it is all cached, as in a serial run.
"""

from __future__ import annotations

from collections.abc import Mapping


class AffinityScheduler:
    """Hands out job indices to named workers; see the module docstring."""

    def __init__(self, keys: list[Mapping[str, str] | None]) -> None:
        """``keys``: per job, {node id: cache key}; a job with None is never handed out."""
        self.keys: list[Mapping[str, str]] = [k or {} for k in keys]
        self.pending: list[int] = [j for j, k in enumerate(keys) if k is not None]
        self.held: dict[str, set[str]] = {}
        self.excluded: dict[int, set[str]] = {}  # workers a job must avoid (it died on them)
        self.cost: dict[str, float] = {}  # node id -> seconds when it last ran

    def add_worker(self, worker: str) -> None:
        self.held.setdefault(worker, set())

    def remove_worker(self, worker: str) -> None:
        """A worker is gone, and the cache it held with it."""
        self.held.pop(worker, None)

    def next_for(self, worker: str) -> int | None:
        """The job ``worker`` should run next (now counted as held by it), or None if none suits."""
        allowed = [j for j in self.pending if worker not in self.excluded.get(j, ())]
        if not allowed:
            # a job that died on every remaining worker may still go to one of them
            allowed = [j for j in self.pending if not (self.held.keys() - self.excluded.get(j, set()))]
        if not allowed:
            return None
        mine = self.held.setdefault(worker, set())
        rivals = [keys for name, keys in self.held.items() if name != worker]
        # a repeat of a job another worker holds stays with it: all cached there, as in a serial run
        allowed = [j for j in allowed if not any(_repeat(self.keys[j], keys) for keys in rivals)]
        if not allowed:
            return None
        others = set().union(*rivals)
        best = max(allowed, key=lambda j: (self._worth(j, mine), -self._worth(j, others), -j))
        self.pending.remove(best)
        mine.update(self.keys[best].values())
        return best

    def retry(self, job: int, failed_on: str) -> None:
        """Put ``job`` back, to go to another worker than ``failed_on`` while one is left."""
        self.excluded.setdefault(job, set()).add(failed_on)
        self.pending.append(job)
        self.pending.sort()

    def measured(self, seconds: Mapping[str, float]) -> None:
        """Learn node costs from a finished run: {node id: seconds} of the nodes that ran."""
        self.cost.update(seconds)

    def _worth(self, job: int, held: set[str]) -> float:
        return sum(self.cost.get(node, 1.0) for node, key in self.keys[job].items() if key in held)


def _repeat(keys: Mapping[str, str], held: set[str]) -> bool:
    return bool(keys) and all(key in held for key in keys.values())
