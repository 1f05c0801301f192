"""What a diffusers folder's (or hub id's) JSON files say: model_index.json and component configs.

Only JSON files are read, so this is cheap enough for the checks before every run; ``detect``'s
``FOLDER_RULES`` decide the family from these facts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class UnreadableConfig(ValueError):
    """A folder's JSON file is missing or is no JSON object."""


class FolderFacts:
    """What a diffusers folder's (or hub id's) JSON files say, read on demand, as rules ask."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.index = _model_index(location)
        self._configs: dict[str, dict[str, Any]] = {}

    def has(self, component: str) -> bool:
        """model_index lists ``component`` (a missing one is listed as [null, null])."""
        return listed(self.index.get(component))

    def config(self, component: str) -> dict[str, Any]:
        """``component/config.json`` (UnreadableConfig if missing or not JSON)."""
        if component not in self._configs:
            self._configs[component] = _component_config(self.location, component)
        return self._configs[component]

    unet = property(lambda self: self.config("unet"))

    @property
    def pipeline(self) -> str:
        """The pipeline class model_index names ('' if none)."""
        return str(self.index.get("_class_name") or "")

    @property
    def transformer_class(self) -> str | None:
        """The diffusion transformer's class (SD3Transformer2DModel, FluxTransformer2DModel), if any."""
        return str(self.config("transformer").get("_class_name")) if self.has("transformer") else None

    @property
    def text_time(self) -> bool:
        """SDXL's UNet adds a ``text_time`` embedding (pooled text embedding plus time ids)."""
        return self.unet.get("addition_embed_type") == "text_time"

    @property
    def in_channels(self) -> int | None:
        """The denoiser's (UNet's or transformer's) input channels: 9 for an SD inpainting UNet."""
        denoiser = next((c for c in ("unet", "transformer") if self.has(c)), None)
        return self.config(denoiser).get("in_channels") if denoiser else None

    @property
    def text_encoder_act(self) -> str | None:
        """The first text encoder's activation ('quick_gelu': CLIP ViT-L, 'gelu': OpenCLIP), if any."""
        return self.config("text_encoder").get("hidden_act") if self.has("text_encoder") else None

    @property
    def pooled_dim(self) -> int | None:
        """The pooled embedding's width: text_encoder_2's projection_dim (None without one)."""
        return self.config("text_encoder_2").get("projection_dim") if self.has("text_encoder_2") else None

    @property
    def time_id_count(self) -> int | None:
        """How many time ids the text_time embedding takes: its input is the pooled embedding plus one
        ``addition_time_embed_dim``-wide vector per id (6 for SDXL base, 5 for the refiner)."""
        time_dim = self.unet.get("addition_time_embed_dim") or 0
        if self.pooled_dim is None or not time_dim:
            return None
        ids = (self.unet.get("projection_class_embeddings_input_dim") or 0) - self.pooled_dim
        return ids // time_dim if ids % time_dim == 0 else None


def listed(entry: Any) -> bool:
    """model_index lists a missing component as [null, null]."""
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnreadableConfig(f"missing file {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableConfig(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UnreadableConfig(f"{path} is not a JSON object")
    return document


def _component_config(location: str, component: str) -> dict[str, Any]:
    path = Path(location) / component / "config.json"
    if path.is_file() or Path(location).is_dir():
        return _read_json(path)
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(location, f"{component}/config.json")).read_text())


def _model_index(location: str) -> dict[str, Any]:
    path = Path(location) / "model_index.json"
    if path.is_file():
        return _read_json(path)
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(location, "model_index.json")).read_text())
