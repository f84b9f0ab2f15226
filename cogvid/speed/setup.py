"""Put a loaded engine in the state its :class:`~cogvid.request.ModelChoice` asks for, and check first
that the device can do it (:func:`check_device`, called before any weights load).
"""

from __future__ import annotations

import importlib.util
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cogvid.errors import DeviceError
from cogvid.speed.options import DEFAULT_ATTENTION, FP8_MIN_CAPABILITY, FP8_MODES


@dataclass(frozen=True)
class SpeedState:
    """What a loaded engine runs with: recorded in each sidecar (``"speed"``)."""

    compile: bool = False
    quantize: str | None = None
    quantize_text: bool = False
    attention: str = DEFAULT_ATTENTION  # the kernel ``auto`` resolved to
    quantized_layers: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"compile": self.compile, "quantize": self.quantize, "quantize_text": self.quantize_text,
                "attention": self.attention, "quantized_layers": self.quantized_layers}


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` (inductor) cannot build kernels for ``device`` here, or None."""
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is None:
            return "torch.compile on CUDA needs the triton package"
        return None
    from torch._inductor import config as inductor

    compiler = inductor.cpp.cxx[-1] if isinstance(inductor.cpp.cxx, tuple) else inductor.cpp.cxx
    if not compiler or shutil.which(str(compiler)) is None:
        return f"torch.compile on the CPU needs a C++ compiler ({compiler or 'g++'}), and none was found"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"torch.compile on the CPU needs Python's development headers ({headers} is missing)"
    return None


def check_device(choice: Any, device: torch.device, dtype: torch.dtype) -> str:
    """Refuse (DeviceError, exit 4) what ``device``/``dtype`` cannot run; returns the attention kernel to use."""
    from cogvid.speed.attention import resolve_kernel

    if choice.quantize in FP8_MODES:
        if device.type != "cuda":
            raise DeviceError(f"--quantize {choice.quantize} runs on CUDA GPUs only, and this model runs on {device}",
                              hint="use --quantize int8wo or int8dq on the CPU")
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_MIN_CAPABILITY:
            raise DeviceError(
                f"--quantize {choice.quantize} needs compute capability {FP8_MIN_CAPABILITY[0]}.{FP8_MIN_CAPABILITY[1]} "
                f"or newer (Ada, Hopper); {torch.cuda.get_device_name(device)} has {capability[0]}.{capability[1]}",
                hint="use --quantize int8wo or int8dq on this GPU",
            )
    if choice.compile:
        problem = compile_problem(device)
        if problem is not None:
            hint = "install g++ (e.g. apt-get install g++ python3-dev)" if device.type == "cpu" else "pip install triton"
            raise DeviceError(problem, hint=f"{hint}, or leave out --compile")
    return resolve_kernel(choice.attention, device, dtype)


def apply(engine: Any, choice: Any, kernel: str) -> SpeedState:
    """Quantize, swap the attention kernel and compile the blocks of a freshly loaded ``engine``."""
    from cogvid.speed.blocks import BlockStack

    network = engine.network
    layers = 0
    if choice.quantize is not None:
        from cogvid.speed.quantize import quantize_dit_, quantize_text_encoder_

        layers = quantize_dit_(network, choice.quantize)
        if choice.quantize_text:
            for embedder in engine.conditioner.embedders:
                hook = lambda encoder, mode=choice.quantize: quantize_text_encoder_(encoder, mode)  # noqa: E731
                embedder.after_load = hook
                if embedder.transformer is not None:
                    hook(embedder.transformer)
    if choice.compile or kernel != DEFAULT_ATTENTION:
        network.speed_blocks = BlockStack(network, kernel=kernel, compiled=choice.compile)
    return SpeedState(choice.compile, choice.quantize, choice.quantize_text, kernel, layers)


__all__ = ["SpeedState", "apply", "check_device", "compile_problem"]
