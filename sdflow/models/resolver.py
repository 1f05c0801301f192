"""The one model resolver: a name, path or folder name -> the file or folder on disk it means.

LoadCheckpoint, LoadLoRA, LoadVAE and embeddings all resolve here: an existing path (relative to the
workflow's folder or the working folder), else a name in the configured model folders
(``sdflow.models.folders``), else ModelNotFound saying where it looked and which names are close.
Checkpoints also take ``builtin:NAME`` and a hub id ``org/name`` (needs network); ControlNets and VAEs
take ``builtin:NAME`` too.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path

from sdflow.models import access
from sdflow.models.folders import WEIGHT_SUFFIXES, ModelNotFound, config_file, kind_folders, list_models

BUILTIN_PREFIX = "builtin:"
BUILTIN_ROOT = Path(__file__).resolve().parent.parent / "builtin"
# kind -> (the file a built-in folder of that kind holds, the kind's name in messages, the diffusers
# classes its config.json may name: empty for any)
BUILTIN_KINDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "checkpoints": ("model_index.json", "checkpoint", ()),
    "controlnet": ("config.json", "ControlNet", ("ControlNetModel", "T2IAdapter")),
    "vae": ("config.json", "VAE", ("AutoencoderKL", "AutoencoderTiny", "ConsistencyDecoderVAE")),
}


@dataclass(frozen=True)
class CheckpointSource:
    """Where a checkpoint is: a diffusers ``folder``, a single ``file``, or a ``hub`` id."""

    kind: str
    location: str
    builtin: bool = False

    @property
    def path(self) -> Path:
        return Path(self.location)


def resolve(kind: str, spec: str, base: Path | None = None) -> Path:
    """``spec`` as a path: an existing path (relative to ``base`` or the working folder), else a
    name in the model folders of ``kind`` (or a built-in: ``builtin:tiny-sd15-control``). ModelNotFound
    says where it looked and what is close."""
    if spec.startswith(BUILTIN_PREFIX) and kind in BUILTIN_KINDS:
        return builtin(kind, spec)
    found = _on_disk(kind, spec, base)
    if found is None:
        raise ModelNotFound(not_found_message(kind, spec))
    return found


def checkpoint(spec: str) -> CheckpointSource:
    """The checkpoint ``spec`` names: a built-in, a file or folder, a model-folder name or a hub id
    (ModelNotFound with suggestions if none)."""
    if spec.startswith(BUILTIN_PREFIX):
        return CheckpointSource("folder", str(builtin("checkpoints", spec)), builtin=True)
    path = _on_disk("checkpoints", spec)
    if path is None:
        if _looks_like_hub_id(spec):
            return CheckpointSource("hub", spec)
        if Path(spec).expanduser().is_absolute() or spec.startswith((".", "~")):
            raise ModelNotFound(f"checkpoint file or folder '{spec}' does not exist")
        raise ModelNotFound(not_found_message("checkpoints", spec) + _builtin_hint())
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFound(
                f"'{spec}' is a folder but not a diffusers checkpoint (no model_index.json in it)"
            )
        return CheckpointSource("folder", str(path))
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ModelNotFound(
            f"'{spec}' is not a checkpoint file: expected {', '.join(WEIGHT_SUFFIXES)} or a diffusers folder"
        )
    return CheckpointSource("file", str(path))


def config_folder(spec: str) -> Path:
    """The diffusers folder (or built-in) a node's ``config`` field names, for the configs and
    tokenizers a single file lacks (ModelNotFound if it is no such folder)."""
    source = checkpoint(spec)
    if source.kind != "folder":
        raise ModelNotFound(f"'{spec}' is not a diffusers folder with configs")
    return source.path


def builtin(kind: str, spec: str) -> Path:
    """The folder shipped inside the package that ``builtin:NAME`` names (ModelNotFound listing them)."""
    name = spec[len(BUILTIN_PREFIX) :]
    what = BUILTIN_KINDS[kind][1]
    folder = BUILTIN_ROOT / name
    if not _is_builtin(kind, folder):
        known = ", ".join(BUILTIN_PREFIX + n for n in builtin_names(kind)) or "none"
        raise ModelNotFound(f"no built-in {what} '{name}' (built-ins: {known})")
    return folder


def builtin_names(kind: str = "checkpoints") -> list[str]:
    """Names of the models of ``kind`` shipped inside the package."""
    if not BUILTIN_ROOT.is_dir():
        return []
    return sorted(p.name for p in BUILTIN_ROOT.iterdir() if _is_builtin(kind, p))


def _is_builtin(kind: str, folder: Path) -> bool:
    """Whether ``folder`` holds a built-in model of ``kind``: its marker file, naming one of the kind's
    classes when the kind lists some (a ControlNet and a VAE folder both hold a config.json)."""
    marker, _, classes = BUILTIN_KINDS[kind]
    if not (folder / marker).is_file():
        return False
    if not classes:
        return True
    try:
        return json.loads((folder / marker).read_text(encoding="utf-8")).get("_class_name") in classes
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def _on_disk(kind: str, spec: str, base: Path | None = None) -> Path | None:
    """The existing path ``spec`` is (``base`` first), else the model of ``kind`` it names, else None."""
    path = Path(spec).expanduser()
    if not path.is_absolute() and base is not None and (base / path).exists():
        return _readable(base / path)
    if path.exists():
        return _readable(path)
    return find(kind, spec)


def _readable(path: Path) -> Path:
    """``path``, unless the active sandbox (a server's API job) forbids it: ModelNotFound then."""
    problem = access.refused(path)
    if problem:
        raise ModelNotFound(problem)
    return path


def find(kind: str, name: str) -> Path | None:
    """The model of ``kind`` called ``name`` (relative path, file name, or either without suffix)."""
    models = list_models(kind)
    for matches in (
        lambda m: m.name == name,
        lambda m: m.path.name == name,
        lambda m: _stem(m.name) == name,
        lambda m: _stem(m.path.name) == name,
    ):
        for model in models:
            if matches(model):
                return model.path
    return None


def _stem(name: str) -> str:
    for suffix in WEIGHT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def not_found_message(kind: str, spec: str) -> str:
    """Why ``spec`` was not found, with the closest names and where to configure folders."""
    names = [m.name for m in list_models(kind)]
    folders = kind_folders(kind)
    what = kind.rstrip("s") if kind != "vae" else "VAE"
    message = f"no {what} file or folder '{spec}'"
    if not folders:
        return (
            f"{message}, and no model folders are configured: set SDFLOW_MODELS to a ComfyUI or A1111 "
            f"folder (or list model_folders in {config_file()})"
        )
    hints = _closest_names(spec, names)
    looked = ", ".join(str(f) for f in folders)
    if hints:
        return f"{message} (looked in {looked}); did you mean {', '.join(repr(h) for h in hints)}?"
    return f"{message} (looked in {looked}; {len(names)} {kind} there)"


def _closest_names(spec: str, names: list[str]) -> list[str]:
    by_stem = {_stem(Path(n).name): n for n in names}
    stems = difflib.get_close_matches(_stem(Path(spec).name), list(by_stem), n=3, cutoff=0.5)
    hints = [by_stem[s] for s in stems]
    if not hints:
        hints = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    return hints


def _builtin_hint() -> str:
    return f"; built-ins: {', '.join(BUILTIN_PREFIX + n for n in builtin_names())}"


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not spec.startswith((".", "~"))
        and not spec.lower().endswith(WEIGHT_SUFFIXES)
    )
