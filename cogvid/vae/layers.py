"""Building blocks of the 3D causal VAE: causal convolution, norms, resampling, ResNet block.

Every tensor here is laid out (B, C, T, H, W). Two pieces of state thread through the blocks:

* ``first_frame`` (a :data:`FirstFrame` policy) says when the first frame of the current call is
  treated on its own by the temporal up/down-samplers and by :class:`SpatialNorm3D`:
  ``"odd"`` when the call's frame count is odd (v1.0 SAT code and diffusers), ``"always"``
  (SAT HEAD encoder), ``"never"`` (SAT HEAD decoder with ``cp_size <= 1``, i.e. CogVideoX 1.5).
* ``cache`` (a :class:`ConvCache` or ``None``) carries the last ``k - 1`` input frames of every
  causal convolution from one decode chunk to the next (the original's "fake context parallel"
  cache). Without a cache each call starts by replicating its first frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cogvid.decode_schedule import FirstFrame, keeps_first_frame



class ConvCache:
    """Causal halo between consecutive decode chunks: conv name -> its last ``k - 1`` input frames.

    ``get`` returns what the previous chunk left for the conv ``name`` (or ``None`` for the first
    chunk); ``like`` has the halo's shape, dtype and device. ``put`` stores this chunk's tail.
    A subclass (:mod:`cogvid.vae.parallel`) exchanges halos between ranks instead.
    """

    def __init__(self) -> None:
        self.frames: dict[str, torch.Tensor] = {}

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        return self.frames.get(name)

    def put(self, name: str, tail: torch.Tensor) -> None:
        self.frames[name] = tail


def silu(x: torch.Tensor) -> torch.Tensor:
    """Swish written as in the original (``x * sigmoid(x)``) so rounding matches bit for bit."""
    return x * torch.sigmoid(x)


def per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module or function to every frame of a (B, C, T, H, W) tensor."""
    batch, _, frames = x.shape[:3]
    flat = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, *x.shape[1:2], *x.shape[3:])  # (B, C, T, H, W) -> (B*T, C, H, W)
    flat = fn(flat)
    # (B*T, C', H', W') -> (B, C', T, H', W')
    return flat.reshape(batch, frames, *flat.shape[1:]).permute(0, 2, 1, 3, 4)


class CausalConv3d(nn.Module):
    """3D convolution that is causal in time (``ContextParallelCausalConv3d``).

    Time is padded with ``k - 1`` frames at the front only: copies of the first frame, or the
    cached tail of the previous chunk. Height and width are zero-padded by ``k // 2``.
    State-dict keys: ``conv.weight``, ``conv.bias``.
    """

    def __init__(self, chan_in: int, chan_out: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = nn.Conv3d(chan_in, chan_out, kernel_size)
        self.cache_name = ""  # set by the encoder/decoder to the module's qualified name

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        halo = self.kernel_size - 1
        if halo > 0:
            replicated = x[:, :, :1].expand(-1, -1, halo, -1, -1)  # (B, C, 1, H, W) -> (B, C, k-1, H, W)
            previous = cache.get(self.cache_name, replicated) if cache is not None else None
            if previous is None:
                previous = replicated
            x = torch.cat([previous.to(x.dtype), x], dim=2)
            if cache is not None:
                cache.put(self.cache_name, x[:, :, -halo:].clone())
            pad = self.kernel_size // 2
            x = F.pad(x, (pad, pad, pad, pad), mode="constant", value=0)
        return self.conv(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """The VAE's GroupNorm: 32 groups, eps 1e-6, affine (``Normalize`` in the original)."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class SpatialNorm3D(nn.Module):
    """Decoder norm conditioned on the chunk's latent: ``GroupNorm(f) * conv_y(zq) + conv_b(zq)``.

    ``zq`` (the decoder input of the current call) is resized to ``f``'s (T, H, W) with nearest
    interpolation; under the first-frame rule its first frame is resized on its own.
    Statistics cover only the frames of the current call.
    """

    def __init__(self, f_channels: int, zq_channels: int) -> None:
        super().__init__()
        self.norm_layer = group_norm(f_channels)
        self.conv_y = CausalConv3d(zq_channels, f_channels, kernel_size=1)
        self.conv_b = CausalConv3d(zq_channels, f_channels, kernel_size=1)

    def forward(self, f: torch.Tensor, zq: torch.Tensor, first_frame: FirstFrame) -> torch.Tensor:
        frames = f.shape[2]
        if frames > 1 and keeps_first_frame(first_frame, frames):
            zq_first = F.interpolate(zq[:, :, :1], size=(1, *f.shape[-2:]), mode="nearest")
            zq_rest = F.interpolate(zq[:, :, 1:], size=(frames - 1, *f.shape[-2:]), mode="nearest")
            zq = torch.cat([zq_first, zq_rest], dim=2)
        else:
            zq = F.interpolate(zq, size=f.shape[-3:], mode="nearest")
        return self.norm_layer(f) * self.conv_y(zq) + self.conv_b(zq)


class Upsample3D(nn.Module):
    """Nearest x2 upsampling (time too when ``compress_time``), then a per-frame 3x3 Conv2d."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, first_frame: FirstFrame) -> torch.Tensor:
        frames = x.shape[2]
        if self.compress_time and frames > 1:
            if keeps_first_frame(first_frame, frames):
                first = F.interpolate(x[:, :, 0], scale_factor=2.0, mode="nearest")  # (B, C, H, W): space only
                rest = F.interpolate(x[:, :, 1:], scale_factor=2.0, mode="nearest")  # (B, C, T-1, H, W): time too
                x = torch.cat([first[:, :, None], rest], dim=2)
            else:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = per_frame(lambda frames_2d: F.interpolate(frames_2d, scale_factor=2.0, mode="nearest"), x)
        return per_frame(self.conv, x)


class DownSample3D(nn.Module):
    """Average-pool time by 2 (when ``compress_time``), then a per-frame strided 3x3 Conv2d."""

    def __init__(self, channels: int, compress_time: bool) -> None:
        super().__init__()
        self.compress_time = compress_time
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor, first_frame: FirstFrame) -> torch.Tensor:
        batch, channels, frames, height, width = x.shape
        if self.compress_time and frames > 1:
            # (B, C, T, H, W) -> (B*H*W, C, T)
            seq = x.permute(0, 3, 4, 1, 2).reshape(batch * height * width, channels, frames)
            if keeps_first_frame(first_frame, frames):
                rest = seq[..., 1:]
                if rest.shape[-1] > 0:
                    rest = F.avg_pool1d(rest, kernel_size=2, stride=2)
                seq = torch.cat([seq[..., :1], rest], dim=-1)
            else:
                seq = F.avg_pool1d(seq, kernel_size=2, stride=2)
            # (B*H*W, C, T') -> (B, C, T', H, W)
            x = seq.reshape(batch, height, width, channels, -1).permute(0, 3, 4, 1, 2)
        x = F.pad(x, (0, 1, 0, 1), mode="constant", value=0)
        return per_frame(self.conv, x)


class ResnetBlock3D(nn.Module):
    """Pre-norm ResNet block with causal 3x3x3 convs (``ContextParallelResnetBlock3D``).

    With ``zq_channels`` the norms are :class:`SpatialNorm3D` (decoder), else GroupNorm (encoder).
    A channel change adds a 1x1x1 ``nin_shortcut``.
    """

    def __init__(self, in_channels: int, out_channels: int, zq_channels: int | None = None) -> None:
        super().__init__()
        self.spatial = zq_channels is not None
        self.norm1 = SpatialNorm3D(in_channels, zq_channels) if self.spatial else group_norm(in_channels)
        self.conv1 = CausalConv3d(in_channels, out_channels, kernel_size=3)
        self.norm2 = SpatialNorm3D(out_channels, zq_channels) if self.spatial else group_norm(out_channels)
        self.conv2 = CausalConv3d(out_channels, out_channels, kernel_size=3)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv3d(in_channels, out_channels, kernel_size=1)

    def _norm(self, norm: nn.Module, h: torch.Tensor, zq: torch.Tensor | None, first_frame: FirstFrame) -> torch.Tensor:
        return norm(h, zq, first_frame) if self.spatial else norm(h)

    def forward(
        self,
        x: torch.Tensor,
        zq: torch.Tensor | None = None,
        first_frame: FirstFrame = "odd",
        cache: ConvCache | None = None,
    ) -> torch.Tensor:
        h = silu(self._norm(self.norm1, x, zq, first_frame))
        h = self.conv1(h, cache)
        h = silu(self._norm(self.norm2, h, zq, first_frame))
        h = self.conv2(h, cache)
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h
