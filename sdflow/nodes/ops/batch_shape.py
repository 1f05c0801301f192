"""Batches that round like the runs they replace.

A batched run must give each item the pixels its own run gives. Normalisations, attention and
elementwise work compute each batch item on its own, but CPU matrix products and convolutions pick
their kernels by shape: a product with few rows (the timestep embedding has one row per item) or a
convolution with few channels rounds differently once the batch grows. Inside ``serial_shaped``,
every linear and convolution layer of a model that receives the whole batch computes it in slices
the size of the serial run's batch, so each slice is exactly what the serial run computed. The batch
still shares everything else (one pass through the Python of the model and the sampler per step);
on CUDA, where kernels depend on the batch size anyway, nothing is sliced and the batch runs at full
width — the throughput lever there. (The VAE's attention leaves tensors whose memory layout depends
on the batch size, which changes normalisation kernels too, so a CPU batch decodes item by item.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

SLICED = (torch.nn.Linear, torch.nn.Conv2d)
EXACT_ON_CPU = True  # benchmarks/batch.py switches this off to measure the full-width batch


def exact_slices(device: torch.device) -> bool:
    """Whether batches on ``device`` are computed in serial-shaped slices (the CPU, by default)."""
    return device.type == "cpu" and EXACT_ON_CPU


@contextmanager
def serial_shaped(model: torch.nn.Module, batch: int, serial: int, device: torch.device) -> Iterator[None]:
    """While inside, linear and convolution layers of ``model`` given ``batch`` items along dim 0
    compute them in slices of ``serial`` (nothing changes off the CPU, or when ``batch == serial``)."""
    if not exact_slices(device) or batch == serial:
        yield
        return
    layers = [m for m in model.modules() if type(m) in SLICED]
    for layer in layers:
        layer.forward = _sliced(layer, batch, serial)  # an instance attribute, removed below
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def _sliced(layer: torch.nn.Module, batch: int, serial: int) -> Callable[[torch.Tensor], torch.Tensor]:
    compute = type(layer).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != batch:
            return compute(layer, x)
        return torch.cat([compute(layer, part) for part in x.split(serial)])

    return forward
