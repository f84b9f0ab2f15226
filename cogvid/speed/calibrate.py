"""``cogvid cache calibrate``: fit TeaCache's polynomial for a model from a few uncached runs.

Each run records, at every denoising step, the relative L1 change of the DiT's time embedding and of
its blocks' output (:class:`~cogvid.speed.cache.ChangeRecorder`); a degree-4 polynomial fitted to
(embedding change -> output change) over all steps of all runs is what TeaCache accumulates. It is
written beside the model (``teacache.json``), where ``--cache teacache`` finds it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cogvid import __version__
from cogvid.errors import UsageError
from cogvid.request import GenerationRequest
from cogvid.speed.calibration import DEGREE, calibration_path, write_calibration

#: Prompts of simple scenes; they are also captions the demo model was trained on (none held out).
DEFAULT_PROMPTS = (
    "a blue square moving up over a black background",
    "a green triangle moving right",
    "a yellow circle moving down over a gray background",
    "a red square sliding left over a white background",
)


def record_changes(pipe: Any, prompts: Sequence[str], steps: int | None = None, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> list[tuple[float, float]]:
    """(embedding change, output change) at every step of one uncached run per prompt.

    An image-to-video model takes ``prompt@@image`` lines (as ``cogvid batch`` does)."""
    from cogvid.speed.cache import ChangeRecorder, step_cache

    pairs: list[tuple[float, float]] = []
    for index, text in enumerate(prompts):
        prompt, image = text, None
        if "@@" in text:
            prompt, _, image_text = text.rpartition("@@")
            image = Path(image_text.strip()).expanduser()
        elif pipe.spec.task == "i2v":
            raise UsageError(f"{pipe.name} is an image-to-video model: each calibration prompt needs an image",
                             hint="give --prompts FILE with lines like: the dog turns its head@@dog.png")
        prepared = pipe.prepare(GenerationRequest(prompt=prompt.strip(), image=image, steps=steps, seed=seed + index))
        recorder = ChangeRecorder(prepared.sampler.steps)
        with step_cache(pipe.engine.network, recorder):
            pipe.run(prepared)
        pairs.extend(recorder.pairs)
        if progress is not None:
            progress(index + 1, len(prompts))
    return pairs


def fit(pairs: Sequence[tuple[float, float]]) -> tuple[list[float], float]:
    """Degree-4 least-squares polynomial (highest degree first) and its RMS error over ``pairs``."""
    if len(pairs) <= DEGREE:
        raise UsageError(f"{len(pairs)} steps are too few to fit a degree-{DEGREE} polynomial", hint="use more steps or prompts")
    x, y = np.array(pairs, dtype=np.float64).T
    coefficients = np.polyfit(x, y, DEGREE)
    rms = float(np.sqrt(np.mean((np.polyval(coefficients, x) - y) ** 2)))
    return [float(c) for c in coefficients], rms


def calibrate(pipe: Any, prompts: Sequence[str] = DEFAULT_PROMPTS, steps: int | None = None, seed: int = 0,
              progress: Callable[[int, int], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Fit and store the TeaCache polynomial of ``pipe``'s model; returns (file, what it holds)."""
    if not prompts:
        raise UsageError("no prompts to calibrate with", hint="give a prompt file with at least one line")
    started = time.perf_counter()
    pairs = record_changes(pipe, prompts, steps, seed, progress)
    coefficients, rms = fit(pairs)
    x = [p[0] for p in pairs]
    record = {"model": pipe.name, "prompts": len(prompts), "steps": len(pairs) // len(prompts) + 1, "points": len(pairs),
              "embedding_change_range": [min(x), max(x)], "rms_error": rms, "seconds": round(time.perf_counter() - started, 1),
              "cogvid_version": __version__}
    path = write_calibration(calibration_path(pipe.resolved), coefficients, record)
    return path, {"coefficients": coefficients, **record}


__all__ = ["DEFAULT_PROMPTS", "calibrate", "fit", "record_changes"]
