"""Byte-bounded LRU caches for node outputs and for loaded models."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from sdflow.nodes.types import storages


class LRUCache:
    """Maps cache keys to node outputs, evicting the least recently used past ``budget`` bytes.

    ``used`` counts each tensor storage once however many entries hold it, so a LoRA-patched model
    that shares all but its patched weights with a cached base model adds only those weights."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._entries: OrderedDict[str, tuple[dict[str, Any], dict[int, int]]] = OrderedDict()
        self._holders: dict[int, int] = {}  # storage address -> number of entries holding it
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
        held = storages(outputs.values())
        if key in self._entries:
            self._drop(key)
        if sum(held.values()) > self.budget:
            return False
        self._entries[key] = (outputs, held)
        for address, size in held.items():
            if self._holders.get(address, 0) == 0:
                self.used += size
            self._holders[address] = self._holders.get(address, 0) + 1
        while self.used > self.budget:
            self._evict()
        return True

    def _drop(self, key: str) -> None:
        _, held = self._entries.pop(key)
        for address, size in held.items():
            self._holders[address] -= 1
            if self._holders[address] == 0:
                del self._holders[address]
                self.used -= size

    def _evict(self) -> None:
        self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._holders.clear()
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
