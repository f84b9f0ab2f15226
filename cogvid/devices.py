"""The one place that turns user device and dtype strings into torch objects (the one dtype table).

torch is imported inside the functions that need it, so the names can be checked without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogvid.errors import DeviceError, UsageError

if TYPE_CHECKING:
    import torch

#: Every dtype name a user or a YAML may write -> cogvid's short name.
DTYPE_ALIASES: dict[str, str] = {
    "fp32": "fp32",
    "float32": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}
_TORCH_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def torch_dtype(name: str) -> torch.dtype:
    """``fp32``/``float32``/... -> the torch dtype (UsageError for an unknown name)."""
    import torch

    if name not in DTYPE_ALIASES:
        raise UsageError(f"unknown dtype {name!r}", hint="use fp32, fp16 or bf16")
    return getattr(torch, _TORCH_NAMES[DTYPE_ALIASES[name]])


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype -> its short name (``fp32``, ``fp16``, ``bf16``), or str(dtype) for any other."""
    for short, torch_name in _TORCH_NAMES.items():
        if str(dtype) == f"torch.{torch_name}":
            return short
    return str(dtype)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA when present, else CPU; ``cuda:N`` must exist."""
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N") from e
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} requested but CUDA is not available",
                hint="use --device cpu, or install a CUDA build of PyTorch",
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found",
                hint=f"use cuda:0 ... cuda:{torch.cuda.device_count() - 1}",
            )
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, model_dtype: str, device: torch.device) -> torch.dtype:
    """The run dtype: explicit, else the model's (fp16/bf16) on GPU and float32 on CPU."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch_dtype(model_dtype) if device.type != "cpu" else torch.float32
    return torch_dtype(dtype)


def free_memory(device: str | torch.device, *, own: bool = False) -> int | None:
    """Free bytes on a CUDA device (``own``: plus what this process's allocator already holds there),
    or None for any other device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return int(free) + (int(torch.cuda.memory_reserved(device)) if own else 0)
