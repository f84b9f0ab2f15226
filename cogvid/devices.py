"""The one place that turns user device and dtype strings into torch objects."""

from __future__ import annotations

import torch

from cogvid.errors import DeviceError, UsageError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
DTYPE_NAMES: dict[torch.dtype, str] = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None) is CUDA when present, else CPU; ``cuda:N`` must exist."""
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
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return DTYPES[model_dtype] if device.type != "cpu" else torch.float32
    if dtype not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}", hint="use fp32, fp16 or bf16")
    return DTYPES[dtype]
