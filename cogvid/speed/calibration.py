"""TeaCache's per-model polynomial: the published CogVideoX coefficients, or a calibration stored
beside the model (``teacache.json``, written by ``cogvid cache calibrate``). No torch here.

TeaCache estimates how much the DiT's output would change from how much its time embedding changed:
``estimate = poly(relative L1 change of the embedding)``, a degree-4 polynomial fitted per model (its
coefficients highest degree first, as ``numpy.polyfit`` writes them). The published coefficients were
fitted on diffusers' CogVideoX transformers, whose time embedding is the same tensor as cogvid's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cogvid.errors import UsageError

CALIBRATION_FILE = "teacache.json"
DEGREE = 4

#: TeaCache's published coefficients (ali-vilab/TeaCache, TeaCache4CogVideoX1.5), by registry name.
PUBLISHED: dict[str, tuple[float, ...]] = {
    "cogvideox-2b": (-3.10658903e01, 2.54732368e01, -5.92380459e00, 1.75769064e00, -3.61568434e-03),
    "cogvideox-5b": (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
    "cogvideox-5b-i2v": (-1.53880483e03, 8.43202495e02, -1.34363087e02, 7.97131516e00, -5.23162339e-02),
    "cogvideox1.5-5b": (2.50210439e02, -1.65061612e02, 3.57804877e01, -7.81551492e-01, 3.58559703e-02),
    "cogvideox1.5-5b-i2v": (1.22842302e02, -1.04088754e02, 2.62981677e01, -3.06009921e-01, 3.71213220e-02),
}


def calibration_path(model: Any) -> Path:
    """Where the calibration of a :class:`~cogvid.prepare.ResolvedModel` lives: beside its weights
    (the folder holding its ``transformer/``)."""
    return Path(model.paths.transformer).parent / CALIBRATION_FILE


def read_calibration(path: Path) -> tuple[float, ...]:
    """The coefficients of a ``teacache.json`` (UsageError naming the file when it is not one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        coefficients = tuple(float(c) for c in data["coefficients"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{path} is not a TeaCache calibration: {e}", hint="run `cogvid cache calibrate` again, or delete the file") from e
    if not coefficients or not all(math.isfinite(c) for c in coefficients):
        raise UsageError(f"{path} holds no finite coefficients", hint="run `cogvid cache calibrate` again, or delete the file")
    return coefficients


def teacache_coefficients(model: Any) -> tuple[tuple[float, ...], str]:
    """(coefficients, where they come from) for a resolved model: its calibration file if there is
    one, else the published ones of its registry name; UsageError (before loading) when neither exists."""
    path = calibration_path(model)
    if path.is_file():
        return read_calibration(path), str(path)
    name = model.entry.name if model.entry is not None else None
    if name in PUBLISHED:
        return PUBLISHED[name], f"published ({name})"
    label = model.name
    raise UsageError(
        f"no TeaCache coefficients for {label}: none are published for it and {path} does not exist",
        hint=f"run `cogvid cache calibrate -m {name}` once (a few uncached runs), or use --cache fbcache" if name
        else "run `cogvid cache calibrate --config ...` once, or use --cache fbcache",
    )


def polynomial(coefficients: tuple[float, ...], x: float) -> float:
    """``coefficients[0] * x**n + ... + coefficients[n]`` (highest degree first, like numpy.poly1d)."""
    value = 0.0
    for c in coefficients:
        value = value * x + c
    return value


def write_calibration(path: Path, coefficients: list[float], record: dict[str, Any]) -> Path:
    """Write ``teacache.json`` (atomically); a folder that cannot be written is a UsageError."""
    data = {"kind": "teacache", "coefficients": [float(c) for c in coefficients], **record}
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e}", hint="make the model folder writable, or copy the model somewhere writable") from e
    return path


__all__ = ["CALIBRATION_FILE", "PUBLISHED", "calibration_path", "polynomial", "read_calibration", "teacache_coefficients", "write_calibration"]
