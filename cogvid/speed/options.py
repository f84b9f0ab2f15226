"""The speed options' names, their parsing and the checks that need no torch.

``--compile``, ``--quantize MODE``, ``--quantize-text`` and ``--attention KERNEL`` describe how a
model is loaded (fields of :class:`~cogvid.request.ModelChoice`); ``--cache KIND[:THRESHOLD]`` is a
setting of one video (a field of :class:`~cogvid.request.GenerationRequest`: it changes the video,
costs no reload, and a batch line or a REPL ``/set`` may change it). This module imports no torch.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from cogvid.errors import UsageError, choice_hint

QUANTIZE_MODES = ("int8wo", "int8dq", "fp8wo", "fp8dq")
"""torchao modes: int8 weight-only, int8 dynamic activations + int8 weights, and the fp8 pair."""
FP8_MODES = ("fp8wo", "fp8dq")
FP8_MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first GPUs with fp8 tensor cores
ATTENTION_KERNELS = ("auto", "sdpa", "flash", "sage")
"""``sdpa`` is PyTorch's scaled_dot_product_attention (the default); ``flash`` the flash-attn package,
``sage`` SageAttention (CUDA, fp16/bf16 only); ``auto`` the fastest of them that can run."""
DEFAULT_ATTENTION = "sdpa"
ATTENTION_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}
CACHE_KINDS = ("teacache", "fbcache")
DEFAULT_THRESHOLDS = {"teacache": 0.3, "fbcache": 0.12}
"""Default thresholds, measured on the demo model with its judge (50 held-out captions, README):
``teacache`` 0.3 (TeaCache's "2.1x" setting for CogVideoX1.5) skips 64% of the DiT forwards with
colour, direction and shape within 0.04 of uncached on two seed sets; ``fbcache`` 0.12 skips 26%
(every accuracy unchanged; at 0.2 it skips 51% but shape drops by 0.10)."""
MAX_THRESHOLD = 10.0
CACHE_HINT = "write teacache or fbcache, with an optional threshold, e.g. --cache teacache:0.3"


def check_quantize(value: Any) -> str | None:
    """None (off) or one of :data:`QUANTIZE_MODES`."""
    if value is None:
        return None
    if value not in QUANTIZE_MODES:
        raise UsageError(f"unknown quantization {value!r}", hint=choice_hint(value, QUANTIZE_MODES))
    return value


def check_attention(value: Any) -> str:
    """One of :data:`ATTENTION_KERNELS`."""
    if value not in ATTENTION_KERNELS:
        raise UsageError(f"unknown attention kernel {value!r}", hint=choice_hint(value, ATTENTION_KERNELS))
    return value


def parse_cache(value: Any) -> tuple[str, float | None] | None:
    """``"teacache"``, ``"fbcache:0.1"``, ... -> (kind, threshold or None); None stays None (no cache)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise UsageError(f"the cache must be text like \"teacache:0.2\", found {type(value).__name__}", hint=CACHE_HINT)
    kind, sep, tail = value.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in CACHE_KINDS:
        raise UsageError(f"unknown step cache {value!r}", hint=CACHE_HINT)
    if not sep:
        return kind, None
    try:
        threshold = float(tail)
    except ValueError:
        raise UsageError(f"the cache threshold {tail!r} is not a number", hint=CACHE_HINT) from None
    if not math.isfinite(threshold) or not 0.0 < threshold <= MAX_THRESHOLD:
        raise UsageError(f"the cache threshold must be above 0 and at most {MAX_THRESHOLD:g}, found {tail}", hint=CACHE_HINT)
    return kind, threshold


def check_cache(value: Any) -> str | None:
    """A cache setting in its normal form: ``"kind"`` or ``"kind:threshold"`` (None: no cache)."""
    parsed = parse_cache(value)
    if parsed is None:
        return None
    kind, threshold = parsed
    return kind if threshold is None else f"{kind}:{threshold:g}"


def with_default_threshold(value: str | None) -> str | None:
    """``"teacache"`` -> ``"teacache:0.3"`` (what a prepared request records); None stays None."""
    parsed = parse_cache(value)
    if parsed is None:
        return None
    kind, threshold = parsed
    return f"{kind}:{(threshold if threshold is not None else DEFAULT_THRESHOLDS[kind]):g}"


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def check_choice(compile: bool, quantize: str | None, quantize_text: bool, attention: str, device: str) -> None:
    """Combinations refused before anything loads (the device-dependent rest: :mod:`cogvid.speed.device`)."""
    if quantize_text and quantize is None:
        raise UsageError("--quantize-text quantizes T5 with the --quantize mode, and none was given", hint="add --quantize int8wo (or another mode)")
    on_cpu = device.strip().lower() == "cpu"
    if quantize in FP8_MODES and on_cpu:
        raise UsageError(f"--quantize {quantize} needs a CUDA GPU of compute capability 8.9 or newer; fp8 does not run on the CPU",
                         hint="use --quantize int8wo or int8dq on the CPU")
    if quantize is not None and not installed("torchao"):
        raise UsageError(f"--quantize {quantize} needs the torchao package", hint='pip install "cogvid[speed]" (or pip install torchao)')
    if attention in ATTENTION_PACKAGES:
        if on_cpu:
            raise UsageError(f"--attention {attention} runs on CUDA GPUs only", hint="use --attention sdpa (the default) on the CPU")
        package = ATTENTION_PACKAGES[attention]
        if not installed(package):
            raise UsageError(f"--attention {attention} needs the {package} package, which is not installed",
                             hint=f"pip install {package.replace('_', '-')}, or use --attention sdpa (the default) or auto")


def describe(choice: Any, cache: str | None) -> str | None:
    """One line for ``--dry-run`` naming the speed settings in effect (None when all are off)."""
    parts = []
    if choice.compile:
        parts.append("compiled blocks")
    if choice.quantize:
        parts.append(f"quantize {choice.quantize}" + (" (DiT and T5)" if choice.quantize_text else " (DiT)"))
    if choice.attention != DEFAULT_ATTENTION:
        parts.append(f"attention {choice.attention}")
    if cache:
        parts.append(f"cache {cache}")
    return ", ".join(parts) or None


__all__ = [
    "ATTENTION_KERNELS",
    "CACHE_KINDS",
    "DEFAULT_ATTENTION",
    "DEFAULT_THRESHOLDS",
    "QUANTIZE_MODES",
    "check_attention",
    "check_cache",
    "check_choice",
    "check_quantize",
    "describe",
    "parse_cache",
    "with_default_threshold",
]
