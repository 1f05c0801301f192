"""LyCORIS LoHa and LoKr layers: their keys, and the weight update each makes.

- LoHa (``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``): the Hadamard product of two
  low-rank products, ``(w1_a @ w1_b) * (w2_a @ w2_b)``, scaled by ``alpha / rank`` (rank = the rows of
  ``w1_b``; no alpha: 1).
- LoKr (``lokr_w1`` or ``lokr_w1_a`` / ``lokr_w1_b``, ``lokr_w2`` or ``lokr_w2_a`` / ``lokr_w2_b``): the
  Kronecker product ``kron(w1, w2)``, scaled by ``alpha / rank`` when a factored pair gives a rank
  (``w2``'s if factored, else ``w1``'s), else by 1 — as ComfyUI and LyCORIS apply them.

Conv layers keep ``w1_b`` / ``w2_b`` flat (``in * kh * kw`` columns), or for LoKr a 4-D ``w2``; the
update is reshaped to the layer's weight. Tucker (``hada_t1/t2``, ``lokr_t2``) is not read here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# key suffix -> role, for the layer stems of a kohya-named LyCORIS file
ROLES: dict[str, str] = {
    f".{role}": role
    for role in (
        "hada_w1_a",
        "hada_w1_b",
        "hada_w2_a",
        "hada_w2_b",
        "lokr_w1",
        "lokr_w1_a",
        "lokr_w1_b",
        "lokr_w2",
        "lokr_w2_a",
        "lokr_w2_b",
    )
}
_LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")


class LycorisError(ValueError):
    """A LoHa/LoKr layer whose keys or shapes do not make an update."""


@dataclass(frozen=True)
class LohaLayer:
    """``delta = scale * (w1_a @ w1_b) * (w2_a @ w2_b)`` for the layer called ``name``."""

    target: str
    name: str
    flat: bool
    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        """(out, in) of the update; a conv layer's as (out, in * kh * kw)."""
        return (int(self.w1_a.shape[0]), int(self.w1_b.shape[1]))

    def delta(self, device: torch.device) -> torch.Tensor:
        """The update in float32 on ``device``, shaped as ``shape``."""
        w1_a, w1_b, w2_a, w2_b = (
            t.to(device, torch.float32) for t in (self.w1_a, self.w1_b, self.w2_a, self.w2_b)
        )
        return (w1_a @ w1_b) * (w2_a @ w2_b) * self.scale


@dataclass(frozen=True)
class LokrLayer:
    """``delta = scale * kron(w1, w2)`` for the layer called ``name``; each factor is one matrix (a 4-D
    kernel for a conv ``w2``) or a low-rank pair ``(a, b)`` making ``a @ b``."""

    target: str
    name: str
    flat: bool
    w1: tuple[torch.Tensor, ...]  # (w1,) or (w1_a, w1_b)
    w2: tuple[torch.Tensor, ...]  # (w2,) or (w2_a, w2_b)
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the Kronecker product: (out1 * out2, in1 * in2, *w2's kernel)."""
        (out1, in1), (out2, in2, *kernel) = _factor_shape(self.w1), _factor_shape(self.w2)
        return (out1 * out2, in1 * in2, *kernel)

    def delta(self, device: torch.device) -> torch.Tensor:
        """The update in float32 on ``device``, shaped as ``shape``."""
        w1, w2 = _factor(self.w1, device), _factor(self.w2, device)
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return torch.kron(w1, w2) * self.scale


def _factor_shape(factor: tuple[torch.Tensor, ...]) -> tuple[int, ...]:
    if len(factor) == 1:
        return tuple(int(d) for d in factor[0].shape)
    return (int(factor[0].shape[0]), int(factor[1].shape[1]))


def _factor(factor: tuple[torch.Tensor, ...], device: torch.device) -> torch.Tensor:
    tensors = [t.to(device, torch.float32) for t in factor]
    return tensors[0] if len(tensors) == 1 else tensors[0] @ tensors[1]


def is_lycoris(roles: dict[str, torch.Tensor]) -> bool:
    """Whether a layer's keys are LoHa or LoKr ones."""
    return any(role.startswith(("hada_", "lokr_")) for role in roles)


def layer(target: str, name: str, flat: bool, roles: dict[str, torch.Tensor]) -> LohaLayer | LokrLayer:
    """The LoHa or LoKr layer of one stem's keys (``alpha`` included); LycorisError when keys are
    missing or their shapes do not multiply."""
    alpha = float(roles["alpha"]) if "alpha" in roles else None
    if any(role.startswith("hada_") for role in roles):
        missing = [role for role in _LOHA if role not in roles]
        if missing:
            raise LycorisError(f"a LoHa layer without {', '.join(missing)}")
        w1_a, w1_b, w2_a, w2_b = (roles[role] for role in _LOHA)
        if not all(t.dim() == 2 for t in (w1_a, w1_b, w2_a, w2_b)) or (
            w1_a.shape[0],
            w1_b.shape[1],
            w1_a.shape[1],
        ) != (w2_a.shape[0], w2_b.shape[1], w1_b.shape[0]):
            raise LycorisError(
                f"LoHa matrices that do not multiply: w1 {tuple(w1_a.shape)} @ {tuple(w1_b.shape)}, "
                f"w2 {tuple(w2_a.shape)} @ {tuple(w2_b.shape)}"
            )
        scale = alpha / int(w1_b.shape[0]) if alpha is not None else 1.0
        return LohaLayer(target, name, flat, w1_a, w1_b, w2_a, w2_b, scale)
    w1, rank1 = _lokr_factor(roles, "lokr_w1")
    w2, rank2 = _lokr_factor(roles, "lokr_w2")
    if w1[-1].dim() != 2 or w2[-1].dim() not in (2, 4):
        raise LycorisError(
            f"LoKr factors of unexpected shapes: w1 {_factor_shape(w1)}, w2 {_factor_shape(w2)}"
        )
    rank = rank2 if rank2 is not None else rank1  # ComfyUI: the factored w2's rank wins
    scale = alpha / rank if alpha is not None and rank is not None else 1.0
    return LokrLayer(target, name, flat, w1, w2, scale)


def _lokr_factor(roles: dict[str, torch.Tensor], stem: str) -> tuple[tuple[torch.Tensor, ...], int | None]:
    """One LoKr factor (full, or the low-rank pair) and the rank of the pair (None when full)."""
    if stem in roles:
        return (roles[stem],), None
    a, b = roles.get(f"{stem}_a"), roles.get(f"{stem}_b")
    if a is None or b is None:
        raise LycorisError(f"a LoKr layer without {stem} (or {stem}_a and {stem}_b)")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise LycorisError(f"LoKr {stem}_a {tuple(a.shape)} and {stem}_b {tuple(b.shape)} do not multiply")
    return (a, b), int(b.shape[0])


def flat_size(shape: tuple[int, ...]) -> tuple[int, int]:
    """A weight's shape as (out, everything else): how LoHa and factored LoKr write conv updates."""
    return (shape[0], math.prod(shape[1:]))
