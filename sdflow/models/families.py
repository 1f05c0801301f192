"""Model families: what differs between SD 1.x, SD 2.x, SDXL base and SDXL refiner, in one object.

Nodes ask the family (carried by Model, Clip and Conditioning) instead of branching on names; the
loaders decide the family from a checkpoint's files.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One model family: how text becomes conditioning and what the UNet expects."""

    name: str  # stable id, used in messages, cache keys and `sdflow models`
    label: str  # for people: "SD 1.x"
    default_size: int  # the side its UNet was trained at, in pixels
    text_encoders: int  # 1, or 2 for SDXL base
    context_dim: int  # width of the conditioning the UNet's cross-attention reads
    pooled: bool = False  # the UNet also takes a pooled text embedding (SDXL)

    def __str__(self) -> str:
        return self.label


SD15 = Family("sd15", "SD 1.x", 512, 1, 768)
SD2 = Family("sd2", "SD 2.x", 768, 1, 1024)
SDXL = Family("sdxl", "SDXL", 1024, 2, 2048, pooled=True)
SDXL_REFINER = Family("sdxl_refiner", "SDXL refiner", 1024, 1, 1280, pooled=True)

FAMILIES: dict[str, Family] = {f.name: f for f in (SD15, SD2, SDXL, SDXL_REFINER)}


def get(name: str) -> Family:
    """The family called ``name`` (KeyError for an unknown one)."""
    return FAMILIES[name]
