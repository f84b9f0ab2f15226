"""One video's settings in one object: what to load (:class:`ModelChoice`) and what to make (:class:`GenerationRequest`).

Every entry point builds a request and nothing else: the CLI from its options, ``cogvid batch`` from a
prompt-file line, the REPL from its settings, the Python API from ``generate()``'s arguments, and
``--from`` from a sidecar. Construction checks each value's type and range, once, with one message per
mistake (:class:`~cogvid.errors.UsageError`, which is also a ValueError; a wrong type is an
:class:`~cogvid.errors.ArgumentTypeError`, also a TypeError). What a value means for a particular model
(frame rules, sizes, the sampler's table) is checked by :mod:`cogvid.prepare` before any weights load.

The JSON form (:meth:`GenerationRequest.to_json`, schema :data:`SCHEMA_VERSION`) is what a sidecar
stores under ``"request"``; :meth:`GenerationRequest.from_json` reads it back for ``--from``.
This module imports no torch.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cogvid.devices import DTYPE_ALIASES
from cogvid.diffusion import MAX_STEPS, SAMPLER_NAMES
from cogvid.errors import ArgumentTypeError, UsageError, choice_hint
from cogvid.speed.options import DEFAULT_ATTENTION, check_attention, check_cache, check_choice, check_quantize

SCHEMA_VERSION = 1
MAX_SEED = 2**63 - 1
MAX_FPS = 240
MAX_VIDEOS = 10_000
MAX_LORA_SCALE = 10.0  # SAT's own scale is lora_alpha / r; strengths beyond +-10 only saturate the video
DECODES = ("original", "diffusers")
LORA_FORMAT_HINT = "write PATH or PATH:SCALE, e.g. ckpts/my-lora:0.8"


# --------------------------------------------------------------------------------------------
# Checks shared by every field


def check_text(value: Any, what: str) -> str:
    """A str that is valid Unicode text (command-line bytes that are not UTF-8 arrive as surrogates)."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{what} must be text, found {type(value).__name__}")
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        byte = ord(value[bad]) - 0xDC00 if ord(value[bad]) >= 0xDC80 else None
        shown = f" (byte 0x{byte:02x} at position {bad})" if byte is not None else f" (at position {bad})"
        raise UsageError(
            f"{what} is not valid UTF-8 text{shown}",
            hint="set your terminal or file to UTF-8, or retype the text",
        )
    return value


def check_int(value: Any, what: str, minimum: int, maximum: int | None = None, hint: str | None = None) -> int:
    """An int (not a bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{what} must be a whole number, found {_shown(value)}", hint=hint)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise UsageError(f"{what} must be {bound}, found {value}", hint=hint)
    return value


def check_number(value: Any, what: str, minimum: float, hint: str | None = None) -> float:
    """A finite int or float (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(f"{what} must be a number, found {_shown(value)}", hint=hint)
    if not math.isfinite(value) or value < minimum:
        bound = "" if minimum == -math.inf else f" of at least {minimum:g}"
        raise UsageError(f"{what} must be a finite number{bound}, found {value}", hint=hint)
    return float(value)


def _path(value: Any, what: str) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value.strip():
        return Path(check_text(value.strip(), what)).expanduser()
    raise ArgumentTypeError(f"{what} must be a path, found {_shown(value)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def sampler_name(value: str) -> str:
    """The short name of a sampler given by short name or by its original dotted target."""
    check_text(value, "the sampler")
    if value in SAMPLER_NAMES:
        return value
    for short, target in SAMPLER_NAMES.items():
        if value == target:
            return short
    raise UsageError(f"unknown sampler {value!r}", hint=choice_hint(value, SAMPLER_NAMES, "known samplers"))


# --------------------------------------------------------------------------------------------
# LoRA


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA to apply: a checkpoint folder (or file) and a strength.

    ``scale`` multiplies the LoRA's own ``lora_alpha / r``: 1.0 runs it as trained, 0.0 is the base.
    """

    path: Path
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", _path(self.path, "a LoRA path"))
        scale = check_number(self.scale, f"the scale of LoRA {self.path}", -math.inf, hint="e.g. 0.8 (1 = as trained)")
        if abs(scale) > MAX_LORA_SCALE:
            raise UsageError(
                f"LoRA scale {scale:g} is out of range: strengths beyond +-{MAX_LORA_SCALE:g} only saturate the video",
                hint="use a scale between 0 and 1 (1 = as trained), e.g. --lora ckpts/my-lora:0.8",
            )
        object.__setattr__(self, "scale", scale)

    @classmethod
    def parse(cls, text: str | Path | LoraSpec, base_dir: Path | None = None) -> LoraSpec:
        """``PATH`` or ``PATH:SCALE`` (what follows the last ``:`` is a scale when it is a number and the
        whole text is not an existing path). A relative PATH is looked up in ``base_dir`` first (a prompt
        file's folder), then in the current folder."""
        if isinstance(text, LoraSpec):
            return text
        raw = check_text(str(text), "the --lora value").strip()
        path, sep, tail = raw.rpartition(":")
        scale: float = 1.0
        if sep and "/" not in tail and "\\" not in tail and not Path(raw).expanduser().exists():
            if not path:
                raise UsageError(f"--lora {raw!r} has no path", hint=LORA_FORMAT_HINT)
            try:
                scale = float(tail)
            except ValueError:
                raise UsageError(f"--lora {raw!r}: {tail!r} is not a number", hint=LORA_FORMAT_HINT) from None
            raw = path
        if not raw:
            raise UsageError("--lora needs a path", hint=LORA_FORMAT_HINT)
        located = Path(raw).expanduser()
        if base_dir is not None and not located.is_absolute() and (base_dir / located).exists():
            located = base_dir / located
        return cls(located, scale)

    def to_json(self) -> dict[str, Any]:
        """``{"path", "scale"}`` as a sidecar records it."""
        return {"path": str(self.path), "scale": self.scale}

    @classmethod
    def from_json(cls, data: Any) -> LoraSpec:
        if isinstance(data, str):
            return cls.parse(data)
        if not isinstance(data, Mapping) or "path" not in data:
            raise UsageError(f"a LoRA must be \"PATH[:SCALE]\" or {{\"path\", \"scale\"}}, found {_shown(data)}")
        return cls(data["path"], data.get("scale", 1.0))


def parse_loras(values: Iterable[str | Path | LoraSpec], base_dir: Path | None = None) -> tuple[LoraSpec, ...]:
    """Every ``--lora`` value (or JSONL/sidecar entry) as a :class:`LoraSpec`."""
    if isinstance(values, (str, Path)):
        values = [values]
    return tuple(LoraSpec.parse(value, base_dir) for value in values)


# --------------------------------------------------------------------------------------------
# What to load


@dataclass(frozen=True)
class ModelChoice:
    """The model a request runs on and how it is loaded.

    ``name`` is a registry name (None: the default model, unless ``configs`` name original-style YAMLs);
    ``weights`` the weights root; ``configs``/``overrides`` extra YAML and ``--set`` values; ``loras`` are
    merged into the DiT at load time; ``device``/``dtype`` decide where it runs. ``offload`` is how the
    parts share the GPU (``none``, ``text``, ``model``, ``blocks``; None: ``memory`` decides) and
    ``memory`` the budget that decides it: ``auto`` (the free memory of the CUDA device), ``off`` or a
    size such as ``24GiB`` (see :mod:`cogvid.memory_plan`).
    ``parallel`` is how the processes of a ``torchrun`` world share the work (:mod:`cogvid.parallel`;
    same video either way). ``compile`` (torch.compile of the DiT blocks), ``quantize`` (a torchao mode for
    the DiT's linear layers, and T5's with ``quantize_text``) and ``attention`` (the attention kernel)
    decide how fast (see :mod:`cogvid.speed`); all off by default.
    """

    name: str | None = None
    weights: Path | None = None
    configs: tuple[Path, ...] = ()
    overrides: tuple[str, ...] = ()
    loras: tuple[LoraSpec, ...] = ()
    device: str = "auto"
    dtype: str | None = None
    offload: str | None = None
    memory: str = "auto"
    parallel: str = "auto"
    compile: bool = False
    quantize: str | None = None
    quantize_text: bool = False
    attention: str = DEFAULT_ATTENTION

    def __post_init__(self) -> None:
        _check_fields(self, _CHOICE_CHECKS, [f.name for f in dataclasses.fields(self)])

    def replace(self, **changes: Any) -> ModelChoice:
        """A copy with ``changes``, each checked."""
        return _replaced(self, _CHOICE_CHECKS, changes)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": str(self.weights) if self.weights is not None else None,
            "configs": [str(c) for c in self.configs],
            "overrides": list(self.overrides),
            "loras": [lora.to_json() for lora in self.loras],
            "device": self.device,
            "dtype": self.dtype,
            "offload": self.offload,
            "memory": self.memory,
            "parallel": self.parallel,
            "compile": self.compile,
            "quantize": self.quantize,
            "quantize_text": self.quantize_text,
            "attention": self.attention,
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelChoice:
        data = _mapping(data, "request.model", {f.name for f in dataclasses.fields(cls)})
        values = dict(data)
        if "loras" in values:
            values["loras"] = tuple(LoraSpec.from_json(item) for item in _list(values["loras"], "request.model.loras"))
        for key in ("configs", "overrides"):
            if key in values:
                values[key] = tuple(_list(values[key], f"request.model.{key}"))
        return cls(**values)


# --------------------------------------------------------------------------------------------
# What to make


@dataclass(frozen=True)
class GenerationRequest:
    """Every setting of one video (or ``num_videos`` videos with seeds ``seed``, ``seed + 1``, ...).

    None means "the model's default" (a random seed for ``seed``); :func:`cogvid.prepare.prepare`
    replaces each None by its value for the model, so a prepared request describes a video exactly.
    ``decode`` is ``"original"`` (the SAT decode; 1.5 models make 4k+4 frames for 4k+1) or
    ``"diffusers"``; ``vae_tiling`` decodes in overlapping tiles (None: only when the memory plan needs it). ``cache`` is a step cache,
    ``"teacache"`` or ``"fbcache"`` with an optional ``":THRESHOLD"`` (None: every step runs the whole DiT).
    """

    prompt: str = ""
    negative: str = ""
    image: Path | None = None
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    fps: int | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    seed: int | None = None
    num_videos: int = 1
    decode: str = "original"
    vae_tiling: bool | None = None
    cache: str | None = None
    model: ModelChoice = field(default_factory=ModelChoice)

    def __post_init__(self) -> None:
        _check_fields(self, _REQUEST_CHECKS, [f.name for f in dataclasses.fields(self)])

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width), or None for the model's default."""
        return None if self.height is None or self.width is None else (self.height, self.width)

    def replace(self, **changes: Any) -> GenerationRequest:
        """A copy with ``changes``, each checked (the values kept were checked when set); ``size=(h, w)``
        sets both sides."""
        if "size" in changes:
            size = changes.pop("size")
            changes["height"], changes["width"] = size if size is not None else (None, None)
        return _replaced(self, _REQUEST_CHECKS, changes)

    def to_json(self) -> dict[str, Any]:
        """The versioned JSON form stored in sidecars (``schema`` first)."""
        data: dict[str, Any] = {"schema": SCHEMA_VERSION}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "model":
                value = value.to_json()
            elif isinstance(value, Path):
                value = str(value)
            data[item.name] = value
        return data

    @classmethod
    def from_json(cls, data: Any, where: str = "the request") -> GenerationRequest:
        """Read :meth:`to_json`'s form back (a UsageError naming the problem when it is not one)."""
        known = {f.name for f in dataclasses.fields(cls)} | {"schema"}
        data = _mapping(data, where, known)
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            newer = isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION
            raise UsageError(
                f"{where} has request schema {schema!r}; this cogvid reads schema {SCHEMA_VERSION}",
                hint="upgrade cogvid to replay it" if newer else "is this a cogvid sidecar (its \"request\" field)?",
            )
        values = {k: v for k, v in data.items() if k != "schema"}
        if "model" in values:
            values["model"] = ModelChoice.from_json(values["model"])
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Per-field checks: each returns the value to store (normalized), or raises. A value is checked
# when it is set, at construction or by ``replace``, and never again.


def _name(value: Any) -> str | None:
    if value is not None and not check_text(value, "the model name").strip():
        raise UsageError("the model name is empty", hint="see `cogvid models list`")
    return value


def _tuple_of(check: Any, what: str) -> Any:
    def checked(value: Any) -> tuple:
        items = (value,) if isinstance(value, (str, Path)) else tuple(value)
        return tuple(check(item, what) for item in items)

    return checked


def _dtype(value: Any) -> str | None:
    if value is not None and value != "auto" and value not in DTYPE_ALIASES:
        raise UsageError(f"unknown dtype {value!r}", hint="use fp32, fp16 or bf16")
    return value


def _flag(what: str) -> Any:
    def checked(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ArgumentTypeError(f"{what} must be true or false, found {_shown(value)}")
        return value

    return checked


def _parallel(value: Any) -> str:
    from cogvid.parallel import PARALLEL_MODES

    if value not in PARALLEL_MODES:
        raise UsageError(f"unknown --parallel mode {value!r}", hint=choice_hint(value, PARALLEL_MODES))
    return value


def _optional(check: Any) -> Any:
    return lambda value: None if value is None else check(value)


OFFLOAD_MODES = ("none", "text", "model", "blocks")


def _offload(value: Any) -> str | None:
    """An offload mode; ``True``/``False`` (cogvid 0.2's flag, in old sidecars) read as ``model`` / None."""
    if isinstance(value, bool):
        return "model" if value else None
    if value is not None and value not in OFFLOAD_MODES:
        raise UsageError(f"unknown offload mode {value!r}", hint=choice_hint(value, OFFLOAD_MODES))
    return value


def _memory(value: Any) -> str:
    """``auto``, ``off`` or a size in GiB (``24``, ``24GB``, ``24GiB``), kept as written."""
    from cogvid.memory_plan import parse_budget

    text = check_text(value, "--memory").strip().lower()
    parse_budget(text)
    return text


_CHOICE_CHECKS: dict[str, Any] = {
    "name": _name,
    "weights": _optional(lambda v: _path(v, "the weights root")),
    "configs": _tuple_of(_path, "a config file"),
    "overrides": _tuple_of(check_text, "a --set value"),
    "loras": parse_loras,
    "device": lambda v: check_text(v, "the device"),
    "dtype": _dtype,
    "offload": _offload,
    "memory": _memory,
    "parallel": _parallel,
    "compile": _flag("compile"),
    "quantize": check_quantize,
    "quantize_text": _flag("quantize_text"),
    "attention": check_attention,
}


def _model(value: Any) -> ModelChoice:
    if not isinstance(value, ModelChoice):
        raise ArgumentTypeError(f"model must be a ModelChoice, found {_shown(value)}")
    return value


def _decode(value: Any) -> str:
    if value not in DECODES:
        raise UsageError(f"unknown decode {value!r}", hint=choice_hint(value, DECODES))
    return value


_SIZE_HINT = "e.g. --size 480x720"
_REQUEST_CHECKS: dict[str, Any] = {
    "prompt": lambda v: check_text(v, "the prompt"),
    "negative": lambda v: check_text(v, "the negative prompt"),
    "image": _optional(lambda v: _path(v, "the image")),
    "frames": _optional(lambda v: check_int(v, "the frame count", 1, hint="e.g. --frames 49 (1.0 models) or 81 (1.5)")),
    "height": _optional(lambda v: check_int(v, "the height", 1, hint=_SIZE_HINT)),
    "width": _optional(lambda v: check_int(v, "the width", 1, hint=_SIZE_HINT)),
    "fps": _optional(lambda v: check_int(v, "fps", 1, MAX_FPS, hint="e.g. --fps 8 (1.0 models) or 16 (1.5)")),
    "steps": _optional(lambda v: check_int(v, "the step count", 1, MAX_STEPS, hint="CogVideoX models use 50; e.g. --steps 50")),
    "guidance": _optional(lambda v: check_number(v, "the guidance scale", 0.0, hint="1 means no guidance; the models use 6")),
    "sampler": _optional(sampler_name),
    "seed": _optional(lambda v: check_int(v, "the seed", 0, MAX_SEED, hint="e.g. --seed 42")),
    "num_videos": lambda v: check_int(v, "the number of videos", 1, MAX_VIDEOS, hint="e.g. -n 4"),
    "decode": _decode,
    "vae_tiling": _optional(_flag("vae_tiling")),
    "cache": check_cache,
    "model": _model,
}


def _check_fields(obj: Any, checks: dict[str, Any], names: Any) -> None:
    """Check (and normalize in place) the fields ``names`` of a frozen dataclass instance."""
    for name in names:
        object.__setattr__(obj, name, checks[name](getattr(obj, name)))
    if isinstance(obj, GenerationRequest) and (obj.height is None) != (obj.width is None):
        raise UsageError("give both height and width", hint=_SIZE_HINT)
    if isinstance(obj, ModelChoice):
        check_choice(obj.compile, obj.quantize, obj.quantize_text, obj.attention, obj.device)


def _replaced(obj: Any, checks: dict[str, Any], changes: dict[str, Any]) -> Any:
    unknown = set(changes) - set(checks)
    if unknown:
        raise ArgumentTypeError(f"unknown field(s) {', '.join(sorted(unknown))}")
    new = copy.copy(obj)
    for name, value in changes.items():
        object.__setattr__(new, name, value)
    _check_fields(new, checks, changes)
    return new


def _mapping(data: Any, where: str, known: set[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise UsageError(f"{where} must be a JSON object, found {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise UsageError(
            f"{where} has unknown field(s) {', '.join(map(repr, unknown))}",
            hint=f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(sorted(known))}",
        )
    return data


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise UsageError(f"{where} must be a list, found {type(value).__name__}")
    return list(value)


__all__ = [
    "DECODES",
    "OFFLOAD_MODES",
    "SAMPLER_NAMES",
    "MAX_LORA_SCALE",
    "MAX_SEED",
    "SCHEMA_VERSION",
    "GenerationRequest",
    "LoraSpec",
    "ModelChoice",
    "check_int",
    "check_number",
    "check_text",
    "parse_loras",
    "sampler_name",
]
