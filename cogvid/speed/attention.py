"""Attention kernels for the DiT's blocks: PyTorch SDPA, flash-attn and SageAttention.

Every kernel takes queries, keys and values (B, heads, N, D) and returns (B, heads, N, D), without
mask or dropout (the CogVideoX DiT attends over the whole [text; video] sequence).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cogvid.errors import DeviceError
from cogvid.speed.options import ATTENTION_PACKAGES, installed

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
HALF_DTYPES = (torch.float16, torch.bfloat16)


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """PyTorch's scaled_dot_product_attention (what the DiT uses without --attention)."""
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0)


def flash(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The flash-attn package's kernel (it wants (B, N, heads, D))."""
    from flash_attn import flash_attn_func

    out = flash_attn_func(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))  # (B, nh, N, D) -> (B, N, nh, D)
    return out.transpose(1, 2)  # (B, N, nh, D) -> (B, nh, N, D)


def sage(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SageAttention (int8 QK, fp16/fp8 PV) in the heads-first layout."""
    from sageattention import sageattn

    return sageattn(query, key, value, tensor_layout="HND", is_causal=False)


KERNELS: dict[str, Kernel] = {"sdpa": sdpa, "flash": flash, "sage": sage}


def resolve_kernel(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """The kernel ``name`` stands for on ``device``/``dtype`` (``auto``: SageAttention, then flash-attn,
    when installed and able to run there, else SDPA); DeviceError when an explicit one cannot run."""
    usable = device.type == "cuda" and dtype in HALF_DTYPES
    if name == "auto":
        for candidate in ("sage", "flash"):
            if usable and installed(ATTENTION_PACKAGES[candidate]):
                return candidate
        return "sdpa"
    if name in ATTENTION_PACKAGES:
        if device.type != "cuda":
            raise DeviceError(f"--attention {name} runs on CUDA GPUs only, and this model runs on {device}",
                              hint="use --attention sdpa (the default)")
        if dtype not in HALF_DTYPES:
            raise DeviceError(f"--attention {name} runs in fp16 or bf16, and this model runs in {dtype}",
                              hint="use --dtype bf16 (or fp16 for 2B), or --attention sdpa")
        if not installed(ATTENTION_PACKAGES[name]):
            raise DeviceError(f"--attention {name} needs the {ATTENTION_PACKAGES[name]} package",
                              hint=f"pip install {ATTENTION_PACKAGES[name].replace('_', '-')}, or use --attention sdpa")
    return name


__all__ = ["KERNELS", "Kernel", "flash", "resolve_kernel", "sage", "sdpa"]
