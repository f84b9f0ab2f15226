"""The models cogvid knows by name (``configs/registry.yaml``) and where their weights live.

Nothing here imports torch: ``cogvid models list`` must start fast.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cogvid.errors import ConfigError, UsageError

WEIGHTS_ENV = "COGVID_WEIGHTS"
WEIGHT_PARTS = ("transformer", "vae", "t5")


def configs_dir() -> Path:
    """The folder of bundled YAMLs (package data, also after a non-editable install)."""
    try:
        return Path(str(resources.files("cogvid.configs")))
    except ModuleNotFoundError:  # running from a source checkout that is not installed
        return Path(__file__).resolve().parents[1] / "configs"


def weights_root(explicit: str | Path | None = None) -> Path:
    """Weights root: ``--weights DIR`` > ``$COGVID_WEIGHTS`` > ``~/.cache/cogvid/models``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "cogvid" / "models"


@dataclass(frozen=True)
class WeightStatus:
    """One weight part of a model: where cogvid looks for it and whether it is there."""

    part: str
    path: Path
    found: bool
    problem: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A registry entry: everything cogvid knows about a model before loading it."""

    name: str
    title: str
    description: str
    task: str
    generation: str
    parameters: str
    configs: tuple[str, ...]
    height: int
    width: int
    frames: int
    fps: int
    dtype: str
    folder: str
    weights: dict[str, str]
    download: dict[str, str] = field(default_factory=dict)
    lora_config: str | None = None
    builtin: bool = False

    def config_files(self) -> list[Path]:
        """Absolute paths of the model's YAMLs, lowest precedence first."""
        return [configs_dir() / name for name in self.configs]

    def model_dir(self, root: str | Path | None = None) -> Path:
        """The folder holding this model's weights."""
        if self.builtin:
            return Path(str(resources.files("cogvid"))) / self.folder
        return weights_root(root) / self.folder

    def weight_paths(self, root: str | Path | None = None) -> dict[str, Path]:
        """Where each weight part (transformer, vae, t5) is expected."""
        base = self.model_dir(root)
        return {part: base / rel for part, rel in self.weights.items()}

    def weight_status(self, root: str | Path | None = None) -> list[WeightStatus]:
        """Found / missing for each weight part, checked cheaply (file layout only)."""
        return [check_weight_part(part, path) for part, path in self.weight_paths(root).items()]

    def weights_found(self, root: str | Path | None = None) -> bool:
        return all(status.found for status in self.weight_status(root))

    def defaults(self) -> dict[str, Any]:
        """The registry's default layer for config merging (lowest precedence)."""
        args: dict[str, Any] = {"sampling_fps": self.fps}
        if self.task == "t2v":
            args["sampling_image_size"] = [self.height, self.width]
        return {"args": args}

    @property
    def size_label(self) -> str:
        return f"{self.width}x{self.height}"


def check_weight_part(part: str, path: Path) -> WeightStatus:
    """Whether a weight part is present in the expected layout (no file is opened beyond `latest`)."""
    if part == "transformer":
        latest = path / "latest"
        if not latest.is_file():
            return WeightStatus(part, path, False, f"no {latest}")
        try:
            tag = latest.read_text(encoding="utf-8").strip()
        except OSError as e:
            return WeightStatus(part, path, False, f"cannot read {latest}: {e}")
        state = path / tag / "mp_rank_00_model_states.pt"
        if not state.is_file():
            return WeightStatus(part, path, False, f"`latest` says {tag!r} but {state} is missing")
        return WeightStatus(part, path, True)
    if part == "t5":
        if not (path / "config.json").is_file():
            return WeightStatus(part, path, False, f"no {path / 'config.json'}")
        return WeightStatus(part, path, True)
    return WeightStatus(part, path, path.is_file(), None if path.is_file() else f"no {path}")


_REQUIRED = ("task", "configs", "height", "width", "frames", "fps", "dtype", "folder", "weights")


def _entry(name: str, raw: dict[str, Any], source: Path) -> ModelEntry:
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{source}: model {name!r} lacks {', '.join(missing)}")
    if raw["task"] not in ("t2v", "i2v"):
        raise ConfigError(f"{source}: models.{name}.task must be t2v or i2v, found {raw['task']!r}")
    return ModelEntry(
        name=name,
        title=str(raw.get("title", name)),
        description=str(raw.get("description", "")),
        task=raw["task"],
        generation=str(raw.get("generation", "1.0")),
        parameters=str(raw.get("parameters", "?")),
        configs=tuple(raw["configs"]),
        height=int(raw["height"]),
        width=int(raw["width"]),
        frames=int(raw["frames"]),
        fps=int(raw["fps"]),
        dtype=str(raw["dtype"]),
        folder=str(raw["folder"]),
        weights={str(k): str(v) for k, v in raw["weights"].items()},
        download={str(k): str(v) for k, v in (raw.get("download") or {}).items()},
        lora_config=raw.get("lora_config"),
        builtin=bool(raw.get("builtin", False)),
    )


@lru_cache(maxsize=1)
def load_registry() -> dict[str, ModelEntry]:
    """All bundled model entries, by name, in registry order."""
    source = configs_dir() / "registry.yaml"
    with open(source, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    return {name: _entry(name, raw, source) for name, raw in (data.get("models") or {}).items()}


def get_model(name: str) -> ModelEntry:
    """The entry named ``name``; a UsageError suggesting the closest names otherwise."""
    models = load_registry()
    if name in models:
        return models[name]
    close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(
        f"unknown model {name!r}",
        hint=f"{hint}`cogvid models list` shows the known models: {', '.join(models)}",
    )
