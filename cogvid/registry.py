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
from typing import TYPE_CHECKING, Any

from cogvid.errors import CogvidError, ConfigError, MissingFileError, UsageError
from cogvid.layout import resolve_checkpoint_file
from cogvid.safe_yaml import read_yaml
from cogvid.spec import Generation

if TYPE_CHECKING:
    from omegaconf import DictConfig

WEIGHTS_ENV = "COGVID_WEIGHTS"
MODELS_ENV = "COGVID_MODELS"
DEFAULT_MODEL_ENV = "COGVID_DEFAULT_MODEL"
BUILTIN_DEFAULT_MODEL = "cogvideox-tiny"


def default_model_name() -> str:
    """The model used when none is named: ``$COGVID_DEFAULT_MODEL``, else the embedded demo model."""
    return os.environ.get(DEFAULT_MODEL_ENV) or BUILTIN_DEFAULT_MODEL
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
    generation: Generation
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
    config_root: str | None = None  # where `configs` are relative to (a user registry file's folder)
    hub: dict[str, str] = field(default_factory=dict)  # layout ("diffusers", "sat") -> Hugging Face repo id
    diffusers_folder: str | None = None  # where a diffusers-layout copy lives (default <name>-diffusers)

    def config_files(self) -> list[Path]:
        """Absolute paths of the model's YAMLs, lowest precedence first."""
        root = Path(self.config_root) if self.config_root else configs_dir()
        return [root / name for name in self.configs]

    def model_dir(self, root: str | Path | None = None) -> Path:
        """The folder holding this model's weights (an absolute ``folder`` is used as it is)."""
        if self.builtin:
            return Path(str(resources.files("cogvid"))) / self.folder
        folder = Path(self.folder).expanduser()
        return folder if folder.is_absolute() else weights_root(root) / folder

    def weight_paths(self, root: str | Path | None = None) -> dict[str, Path]:
        """Where each weight part (transformer, vae, t5) is expected in the SAT layout."""
        base = self.model_dir(root)
        return {part: base / rel for part, rel in self.weights.items()}

    def diffusers_dir(self, root: str | Path | None = None) -> Path:
        """Where a diffusers-layout copy of this model lives (``<weights root>/<name>-diffusers`` by default)."""
        folder = Path(self.diffusers_folder or f"{self.name}-diffusers").expanduser()
        return folder if folder.is_absolute() else weights_root(root) / folder

    def sat_paths(self, root: str | Path | None = None) -> WeightPaths:
        """The SAT-layout locations of the three weight parts."""
        parts = self.weight_paths(root)
        return WeightPaths(parts["transformer"], parts["vae"], parts["t5"])

    def paths(self, root: str | Path | None = None) -> WeightPaths:
        """Where the weights are read from: the SAT copy when complete, else a diffusers copy (in
        :meth:`diffusers_dir`, or a ``model_index.json`` folder at the SAT folder's place), else the SAT
        locations (reported missing)."""
        sat = self.sat_paths(root)
        if self.builtin or all(status.found for status in sat.statuses()):
            return sat
        for folder in (self.diffusers_dir(root), self.model_dir(root)):
            if (folder / "model_index.json").is_file():
                return WeightPaths.diffusers(folder)
        return sat

    def weight_status(self, root: str | Path | None = None) -> list[WeightStatus]:
        """Found / missing for each weight part, checked cheaply (file layout only)."""
        return self.paths(root).statuses()

    def weights_found(self, root: str | Path | None = None) -> bool:
        return all(status.found for status in self.weight_status(root))

    def summary(self, root: str | Path | None = None) -> dict[str, Any]:
        """What ``cogvid models list|show --json`` reports: defaults, weight paths and whether they are found."""
        paths = self.paths(root)
        statuses = paths.statuses()
        return {
            "name": self.name,
            "title": self.title,
            "task": self.task,
            "generation": self.generation,
            "parameters": self.parameters,
            "height": self.height,
            "width": self.width,
            "frames": self.frames,
            "fps": self.fps,
            "dtype": self.dtype,
            "model_dir": str(paths.folder if paths.layout == "diffusers" else self.model_dir(root)),
            "layout": paths.layout,
            "weights_found": all(s.found for s in statuses),
            "weights": {s.part: {"path": str(s.path), "found": s.found, "problem": s.problem} for s in statuses},
            "download": self.download,
            "hub": self.hub,
            "pull": self.pull_commands(),
        }

    def pull_commands(self) -> list[str]:
        """The ``cogvid models pull`` command for each layout this model has on the Hugging Face Hub."""
        return [f"cogvid models pull {self.name}" + ("" if layout == "diffusers" else f" --layout {layout}")
                for layout in sorted(self.hub)]

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
        if not (path / "latest").is_file():
            return WeightStatus(part, path, False, f"no {path / 'latest'}")
        try:
            resolve_checkpoint_file(path)
        except CogvidError as e:
            return WeightStatus(part, path, False, e.message)
        return WeightStatus(part, path, True)
    if part == "t5":
        if not (path / "config.json").is_file():
            return WeightStatus(part, path, False, f"no {path / 'config.json'}")
        return WeightStatus(part, path, True)
    return WeightStatus(part, path, path.is_file(), None if path.is_file() else f"no {path}")


_REQUIRED = ("task", "configs", "height", "width", "frames", "fps", "dtype", "folder", "weights")


def _entry(name: str, raw: dict[str, Any], source: Path, config_root: Path | None = None) -> ModelEntry:
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
        generation=_generation(raw.get("generation", "1.0"), name, source),
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
        builtin=bool(raw.get("builtin", False)) and config_root is None,
        config_root=str(config_root) if config_root is not None else None,
        hub=_hub(raw.get("hub"), name, source),
        diffusers_folder=str(raw["diffusers_folder"]) if raw.get("diffusers_folder") else None,
    )


def _hub(value: Any, name: str, source: Path) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or any(k not in ("diffusers", "sat") or not isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{source}: models.{name}.hub must map 'diffusers' and/or 'sat' to a Hugging Face repo id, found {value!r}")
    return dict(value)


def _generation(value: Any, name: str, source: Path) -> Generation:
    try:
        return Generation(str(value))
    except ValueError:
        known = ", ".join(g.value for g in Generation)
        raise ConfigError(f"{source}: models.{name}.generation must be one of {known}, found {value!r}") from None


def user_registry_file() -> Path:
    """Your own models: ``$COGVID_MODELS``, else ``~/.config/cogvid/models.yaml`` (same schema as the bundled registry)."""
    env = os.environ.get(MODELS_ENV)
    if env:
        return Path(env).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "cogvid" / "models.yaml"


def _read_registry(source: Path) -> dict[str, Any]:
    data = read_yaml(source, "model registry") or {}  # refuses oversized and alias-bomb files
    if not isinstance(data, dict) or not isinstance(data.get("models") or {}, dict):
        raise ConfigError(f"{source}: expected `models:` mapping names to entries")
    return data.get("models") or {}


@lru_cache(maxsize=8)
def _load(user_file: str | None, mtime: float) -> dict[str, ModelEntry]:
    source = configs_dir() / "registry.yaml"
    models = {name: _entry(name, raw, source) for name, raw in _read_registry(source).items()}
    if user_file is not None:
        path = Path(user_file)
        for name, raw in _read_registry(path).items():
            models[name] = _entry(name, raw, path, config_root=path.parent)
    return models


def load_registry() -> dict[str, ModelEntry]:
    """All known models by name: the bundled ones, then yours (see :func:`user_registry_file`)."""
    user = user_registry_file()
    if user.is_file():
        return _load(str(user), user.stat().st_mtime)
    return _load(None, 0.0)


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


@dataclass(frozen=True)
class WeightPaths:
    """Where the parts of a model are read from, in the SAT or the diffusers layout.

    Diffusers layout: ``transformer`` and ``vae`` are part folders (config.json + safetensors), ``t5`` is
    text_encoder/ and ``tokenizer`` the tokenizer/ beside it.
    """

    transformer: Path
    vae: Path
    t5: Path
    tokenizer: Path | None = None
    layout: str = "sat"

    @classmethod
    def diffusers(cls, folder: Path) -> WeightPaths:
        """The parts of a diffusers-layout model folder (``model_index.json``, transformer/, vae/, ...)."""
        return cls(folder / "transformer", folder / "vae", folder / "text_encoder", folder / "tokenizer", "diffusers")

    @property
    def folder(self) -> Path:
        """The model folder (the transformer part's parent)."""
        return self.transformer.parent

    def statuses(self) -> list[WeightStatus]:
        """Found / missing for each part (file layout only; nothing is read)."""
        if self.layout == "diffusers":
            from cogvid.diffusers_layout import DIFFUSERS_STEM, TRANSFORMERS_STEM, check_part, check_tokenizer

            problems = [("transformer", self.transformer, check_part(self.transformer, DIFFUSERS_STEM)),
                        ("vae", self.vae, check_part(self.vae, DIFFUSERS_STEM)),
                        ("t5", self.t5, check_part(self.t5, TRANSFORMERS_STEM)),
                        ("tokenizer", self.tokenizer or self.t5, check_tokenizer(self.tokenizer or self.t5))]
            return [WeightStatus(part, path, problem is None, problem) for part, path, problem in problems]
        return [check_weight_part(part, path) for part, path in
                (("transformer", self.transformer), ("vae", self.vae), ("t5", self.t5))]

    def check(self, model_label: str) -> None:
        """MissingFileError listing every missing part and the layout cogvid expects."""
        missing = [s for s in self.statuses() if not s.found]
        if not missing:
            return
        lines = "; ".join(f"{s.part}: {s.problem}" for s in missing)
        if self.layout == "diffusers":
            from cogvid.diffusers_layout import LAYOUT

            hint = LAYOUT.replace("\n", " ") + "; `cogvid models pull NAME` downloads and resumes a registry model"
        else:
            hint = ("expected layout: transformer/latest + transformer/<iteration>/mp_rank_00_model_states.pt, "
                    "vae/3d-vae.pt, t5-v1_1-xxl/ (config.json, weights, spiece.model); "
                    "`cogvid models pull NAME` downloads a registry model, `cogvid models show NAME` prints the paths")
        raise MissingFileError(f"weights of {model_label} not found ({lines})", hint=hint)


def weight_paths_from_config(cfg: DictConfig, base: Path | None = None) -> WeightPaths:
    """Paths named inside an original-style config (``args.load``, the VAE ``ckpt_path``, T5 ``model_dir``)."""
    root = base or Path.cwd()

    def resolve(value: Any, what: str) -> Path:
        if value in (None, ""):
            raise UsageError(f"the configuration does not say where the {what} is", hint="pick a model with --model, or set the path in your YAML")
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() else root / path

    model = cfg.model
    t5 = model.conditioner_config.params.emb_models[0].params.model_dir
    return WeightPaths(
        transformer=resolve(cfg.get("args", {}).get("load"), "transformer checkpoint (args.load)"),
        vae=resolve(model.first_stage_config.params.get("ckpt_path"), "VAE checkpoint (first_stage_config.params.ckpt_path)"),
        t5=resolve(t5, "T5 folder (conditioner ... model_dir)"),
    )
