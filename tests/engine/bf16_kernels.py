"""Does this CPU round bf16 like the machine that made ``goldens_bf16/``? (test-only helper)

A bf16 run is reproducible bit for bit only on the same kernels: a single different rounding in
any op (attention, matmul, conv, norms) is carried through the sampler and the VAE and ends about as
far from the original as fp32 is. Which kernels run depends on the CPU (ATen dispatches to
default/AVX2/AVX-512 code, oneDNN to the ISA it finds), not on the thread count. This module
computes a fixed set of bf16 ops of the shapes the tiny test models use, and compares digests of
their bits with the ones recorded on the goldens' machine (``kernel_digests.json``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

DIGESTS_FILE = Path(__file__).parent / "goldens_bf16" / "kernel_digests.json"


def _probe_outputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(torch.bfloat16)

    out = {}
    for tokens in (52, 76):  # DiT sequence of the 1.5 cases (16 text + 36 patches) and of the 1.0 cases (16 + 60)
        q, k, v = rand(2, 2, tokens, 64), rand(2, 2, tokens, 64), rand(2, 2, tokens, 64)
        out[f"sdpa_{tokens}"] = F.scaled_dot_product_attention(q, k, v)
        scores = torch.softmax(torch.matmul(q, k.transpose(-1, -2)).float(), dim=-1).to(torch.bfloat16)
        out[f"matmul_softmax_{tokens}"] = torch.matmul(scores, v)  # T5's attention
    x = rand(2, 76, 128)
    # The DiT's linear layers (in, out): text projection, AdaLN modulation, QKV, attention out, MLP in, MLP out, final.
    for inner, outer in ((32, 128), (64, 1536), (128, 384), (128, 128), (128, 512), (512, 128), (128, 64)):
        features = rand(2, 76, inner)
        weight, bias = rand(outer, inner, scale=inner**-0.5), rand(outer, scale=0.02)
        out[f"linear_{inner}_{outer}"] = F.linear(features, weight, bias)
    out["layer_norm"] = F.layer_norm(x, (128,), rand(128), rand(128), 1e-5)
    out["silu"], out["gelu"], out["softmax"] = F.silu(x), F.gelu(x, approximate="tanh"), torch.softmax(x, dim=-1)
    out["rms_norm"] = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(torch.bfloat16)
    out["mul_add"] = x * rand(128) + rand(128)
    video = rand(1, 32, 3, 12, 16)  # (B, C, T, H, W) like the VAE's activations
    out["conv3d"] = F.conv3d(video, rand(32, 32, 3, 3, 3, scale=0.03), rand(32, scale=0.05), padding=1)
    wide = rand(1, 64, 3, 6, 8)
    out["conv3d_64"] = F.conv3d(wide, rand(64, 64, 3, 3, 3, scale=0.02), rand(64, scale=0.05), padding=1)
    out["group_norm"] = F.group_norm(video, 32, rand(32), rand(32), 1e-6)
    out["conv2d"] = F.conv2d(rand(2, 16, 6, 8), rand(128, 16, 2, 2, scale=0.12), rand(128), stride=2)
    return out


def kernel_digests() -> dict[str, str]:
    """SHA-256 of the bits of each probe op's bf16 output on this CPU."""
    return {
        name: hashlib.sha256(tensor.contiguous().view(torch.int16).numpy().tobytes()).hexdigest()
        for name, tensor in _probe_outputs().items()
    }


def kernels_differ_from_goldens() -> list[str]:
    """Names of the probe ops whose bf16 bits differ from the goldens' machine (empty: the same kernels)."""
    recorded = json.loads(DIGESTS_FILE.read_text())
    current = kernel_digests()
    return sorted(name for name in recorded if current.get(name) != recorded[name])
