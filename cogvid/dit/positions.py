"""Position-embedding math of the CogVideoX DiT (no SAT import): 3D sin-cos table and 3D RoPE.

Both are computed for an explicit grid (latent frames x patch rows x patch columns), so the
model can use the actual input grid instead of the training grid the original is tied to.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """(M,) positions -> (M, dim) table, ``[sin(pos * w), cos(pos * w)]``, w_j = 10000^(-2j/dim), float64."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.einsum("m,d->md", positions.reshape(-1), omega)  # (M, dim/2)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_3d_table(
    hidden_size: int,
    frames: int,
    rows: int,
    cols: int,
    height_interpolation: float = 1.0,
    width_interpolation: float = 1.0,
    time_interpolation: float = 1.0,
) -> torch.Tensor:
    """The 2B's fixed 3D sin-cos table for a (frames, rows, cols) patch grid -> (frames*rows*cols, H) float32.

    Per token: [temporal (H/4) | spatial w-coords (3H/8) | spatial h-coords (3H/8)], tokens in
    (t, h, w) order. Identical to the original's table for its training grid (13 x 30 x 45), and
    its leading rows whenever frames/rows/cols equal the training values.
    """
    spatial_dim, temporal_dim = hidden_size // 4 * 3, hidden_size // 4
    grid_h = np.arange(rows, dtype=np.float32) / height_interpolation
    grid_w = np.arange(cols, dtype=np.float32) / width_interpolation
    w_coords, h_coords = np.meshgrid(grid_w, grid_h)  # each (rows, cols); w first, as the original
    spatial = np.concatenate(
        [sincos_1d(spatial_dim // 2, w_coords), sincos_1d(spatial_dim // 2, h_coords)], axis=1
    )  # (rows*cols, 3H/4)
    temporal = sincos_1d(temporal_dim, np.arange(frames, dtype=np.float32) / time_interpolation)  # (frames, H/4)
    spatial = np.broadcast_to(spatial[None], (frames, rows * cols, spatial_dim))
    temporal = np.broadcast_to(temporal[:, None], (frames, rows * cols, temporal_dim))
    table = np.concatenate([temporal, spatial], axis=-1)  # (frames, rows*cols, H)
    return torch.from_numpy(table.reshape(frames * rows * cols, hidden_size)).float()  # (t h w, H)


def rope_3d_angles(head_dim: int, frames: int, rows: int, cols: int, theta: float = 10000.0) -> torch.Tensor:
    """RoPE angles for a (frames, rows, cols) grid -> (frames*rows*cols, head_dim) float32.

    Split [t (head_dim/4) | h (3/8) | w (3/8)]; per axis f_j = theta^(-2j/dim) on integer
    positions, each angle repeated twice (interleaved pairs). Row order (t, h, w).
    """
    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    axes = []
    for size, dim in zip((frames, rows, cols), dims):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))  # (dim/2,)
        angles = torch.outer(torch.arange(size, dtype=torch.float32), freqs)  # (size, dim/2)
        axes.append(angles.repeat_interleave(2, dim=-1))  # (size, dim), pairs (a0, a0, a1, a1, ...)
    t, h, w = axes
    grid = torch.cat(
        [
            t[:, None, None, :].expand(frames, rows, cols, dims[0]),
            h[None, :, None, :].expand(frames, rows, cols, dims[1]),
            w[None, None, :, :].expand(frames, rows, cols, dims[2]),
        ],
        dim=-1,
    )  # (frames, rows, cols, head_dim)
    return grid.reshape(frames * rows * cols, head_dim)  # (t h w, head_dim)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map each adjacent pair (x0, x1) of the last dim to (-x1, x0)."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., D) -> (..., D/2, 2)
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)  # (..., D/2, 2) -> (..., D)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim) in float32: ``[cos(t*f), sin(t*f)]``, f_j = max_period^(-j/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]  # (B, half)
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*half)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)  # (B, dim)
    return embedding
