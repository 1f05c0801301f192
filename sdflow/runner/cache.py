"""Byte-bounded LRU caches for node outputs and for loaded models."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from sdflow.nodes.types import Port


def size_of(outputs: dict[str, Any]) -> int:
    """Bytes held in tensors and module parameters by one node's outputs."""
    return sum(v.nbytes() for v in outputs.values() if isinstance(v, Port))


class LRUCache:
    """Maps cache keys to node outputs, evicting the least recently used past ``budget`` bytes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self.used = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: str, outputs: dict[str, Any]) -> bool:
        """Keep ``outputs`` unless larger than the whole budget; False when not kept."""
        size = size_of(outputs)
        if key in self._entries:
            self.used -= self._entries.pop(key)[1]
        if size > self.budget:
            return False
        self._entries[key] = (outputs, size)
        self.used += size
        while self.used > self.budget:
            self._evict()
        return True

    def _evict(self) -> None:
        _, (_, size) = self._entries.popitem(last=False)
        self.used -= size

    def clear(self) -> None:
        self._entries.clear()
        self.used = 0


class ModelCache(LRUCache):
    """An LRU cache of loaded models whose budget also respects free memory on a CUDA device."""

    def __init__(self, budget: int, device: torch.device) -> None:
        super().__init__(budget)
        self.device = device
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            self.budget = min(budget, int(total * 0.8))

    def _evict(self) -> None:
        super()._evict()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def clear(self) -> None:
        super().clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
