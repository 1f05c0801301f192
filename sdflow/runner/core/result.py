"""What a run produced: its outputs by node and output name, and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image as PILImage

from sdflow.nodes.ops.pixels import to_pil
from sdflow.nodes.types import Conditioning, Image, Latent, Mask
from sdflow.runner.core.report import RunReport

_TENSORS: dict[type, str] = {Latent: "samples", Image: "pixels", Mask: "values", Conditioning: "embeds"}


@dataclass
class RunResult:
    """What a run produced: ``outputs[node_id][output_name]``, and the report."""

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    report: RunReport = field(default_factory=RunReport)

    def __getitem__(self, ref: str | object) -> Any:
        """``result["node.output"]``, or ``result["node"]`` for a node with one output; a builder
        handle (``result[decoded.image]``) works as well."""
        node, _, output = str(ref).partition(".")
        if node not in self.outputs:
            computed = ", ".join(self.outputs) or "nothing"
            raise KeyError(f"this run has no outputs of '{node}' (it computed {computed}); see run(outputs=)")
        values = self.outputs[node]
        return values[output] if output else next(iter(values.values()))

    def images(self, ref: str | object) -> list[PILImage.Image]:
        """An Image output as 8-bit RGB PIL pictures, one per batch item."""
        value = self[ref]
        if not isinstance(value, Image):
            raise TypeError(f"'{ref}' is a {type(value).__name__}, not an Image")
        return to_pil(value)

    def image(self, ref: str | object) -> PILImage.Image:
        """The first picture of an Image output: ``result.image("decoded")``."""
        return self.images(ref)[0]

    def tensor(self, ref: str | object) -> torch.Tensor:
        """The tensor an output holds: a Latent's samples, an Image's pixels, a Mask's values, a
        Conditioning's embeddings."""
        value = self[ref]
        for kind, attribute in _TENSORS.items():
            if isinstance(value, kind):
                return getattr(value, attribute)
        raise TypeError(f"'{ref}' is a {type(value).__name__}, which holds no single tensor")

    @property
    def files(self) -> list[str]:
        """Paths of the files this run wrote."""
        return self.report.files
