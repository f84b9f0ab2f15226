"""Encoder3D and Decoder3D: the original ``ContextParallelEncoder3D`` / ``ContextParallelDecoder3D``.

Constructors take the original YAML parameters (``encoder_config.params`` / ``decoder_config.params``)
and build modules whose state-dict keys are exactly those of the released ``3d-vae.pt``
(REFERENCE §4.1). Inputs and outputs are (B, C, T, H, W).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from cogvid.errors import ConfigError
from cogvid.vae.layers import (
    CausalConv3d,
    ConvCache,
    DownSample3D,
    FirstFrame,
    ResnetBlock3D,
    SpatialNorm3D,
    Upsample3D,
    group_norm,
    silu,
)


def _check_supported(
    what: str,
    ch: int,
    ch_mult: list,
    attn_resolutions: list,
    resamp_with_conv: bool,
    pad_mode: str,
    temporal_compress_times: int,
) -> None:
    """Reject original options that the released VAE never uses (and cogvid does not build)."""
    if attn_resolutions:
        raise ConfigError(f"{what}.attn_resolutions: attention blocks are not supported by the 3D VAE (use [])")
    if not resamp_with_conv:
        raise ConfigError(f"{what}.resamp_with_conv: only true (the released VAE) is supported")
    if pad_mode != "first":
        raise ConfigError(f"{what}.pad_mode: only 'first' is supported, found {pad_mode!r}")
    levels = math.log2(temporal_compress_times) if temporal_compress_times > 0 else -1
    if levels != int(levels) or levels < 0:
        raise ConfigError(f"{what}.temporal_compress_times: expected a power of two, found {temporal_compress_times}")
    for mult in ch_mult:
        if (ch * mult) % 32:
            raise ConfigError(
                f"{what}.ch / ch_mult: every width (ch * mult) must be a multiple of 32 (GroupNorm groups), "
                f"found {ch} * {mult}"
            )


def _name_caches(module: nn.Module) -> None:
    for name, child in module.named_modules():
        if isinstance(child, CausalConv3d):
            child.cache_name = name


class Encoder3D(nn.Module):
    """Video (B, 3, F, H, W) -> posterior moments (B, 2*z_channels, (F-1)/4+1, H/8, W/8)."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: list = (1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions: list = (),
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        pad_mode: str = "first",
        temporal_compress_times: int = 4,
        gather_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_supported(
            "encoder_config.params", ch, list(ch_mult), list(attn_resolutions), resamp_with_conv, pad_mode, temporal_compress_times
        )
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        temporal_levels = int(math.log2(temporal_compress_times))
        self.conv_in = CausalConv3d(in_channels, ch, kernel_size=3)
        in_ch_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(self.num_resolutions):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[level], ch * ch_mult[level]
            for _ in range(num_res_blocks):
                stage.block.append(ResnetBlock3D(block_in, block_out))
                block_in = block_out
            if level != self.num_resolutions - 1:
                stage.downsample = DownSample3D(block_in, compress_time=level < temporal_levels)
            self.down.append(stage)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = CausalConv3d(block_in, 2 * z_channels if double_z else z_channels, kernel_size=3)
        _name_caches(self)

    def forward(self, x: torch.Tensor, first_frame: FirstFrame = "odd") -> torch.Tensor:
        """Encode the whole clip in one call (as SAT does): no chunking, no caches."""
        h = self.conv_in(x)
        for level, stage in enumerate(self.down):
            for block in stage.block:
                h = block(h)
            if level != self.num_resolutions - 1:
                h = stage.downsample(h, first_frame)
        h = self.mid.block_2(self.mid.block_1(h))
        return self.conv_out(silu(self.norm_out(h)))


class Decoder3D(nn.Module):
    """Latent chunk (B, z_channels, t, h, w) -> frames (B, 3, F, 8h, 8w).

    ``F`` is ``4t - 3`` under the first-frame rule with odd ``t``, else ``4t``. ``up`` is stored
    high-resolution first (``up.0``) and executed from the last level down, as in the original.
    """

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: list = (1, 2, 4, 8),
        num_res_blocks: int,
        attn_resolutions: list = (),
        dropout: float = 0.0,
        resamp_with_conv: bool = True,
        in_channels: int,
        resolution: int,
        z_channels: int,
        double_z: bool = True,
        give_pre_end: bool = False,
        zq_ch: Optional[int] = None,
        add_conv: bool = False,
        pad_mode: str = "first",
        temporal_compress_times: int = 4,
        gather_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_supported(
            "decoder_config.params", ch, list(ch_mult), list(attn_resolutions), resamp_with_conv, pad_mode, temporal_compress_times
        )
        if add_conv:
            raise ConfigError("decoder_config.params.add_conv: only false (the released VAE) is supported")
        if give_pre_end:
            raise ConfigError("decoder_config.params.give_pre_end: only false is supported at inference")
        zq_ch = z_channels if zq_ch is None else zq_ch
        self.num_resolutions = len(ch_mult)
        temporal_levels = int(math.log2(temporal_compress_times))
        block_in = ch * ch_mult[-1]
        self.conv_in = CausalConv3d(z_channels, block_in, kernel_size=3)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in, zq_ch)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in, zq_ch)
        levels: list[nn.Module] = []
        for level in reversed(range(self.num_resolutions)):
            stage = nn.Module()
            stage.block = nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(num_res_blocks + 1):
                stage.block.append(ResnetBlock3D(block_in, block_out, zq_ch))
                block_in = block_out
            if level != 0:
                stage.upsample = Upsample3D(block_in, compress_time=level >= self.num_resolutions - temporal_levels)
            levels.insert(0, stage)
        self.up = nn.ModuleList(levels)
        self.norm_out = SpatialNorm3D(block_in, zq_ch)
        self.conv_out = CausalConv3d(block_in, out_ch, kernel_size=3)
        _name_caches(self)

    def forward(self, z: torch.Tensor, first_frame: FirstFrame = "odd", cache: ConvCache | None = None) -> torch.Tensor:
        """Decode one chunk; ``cache`` carries the causal halo from the previous chunk (None: none)."""
        h = self.conv_in(z, cache)
        h = self.mid.block_1(h, z, first_frame, cache)
        h = self.mid.block_2(h, z, first_frame, cache)
        for level in reversed(range(self.num_resolutions)):
            stage = self.up[level]
            for block in stage.block:
                h = block(h, z, first_frame, cache)
            if level != 0:
                h = stage.upsample(h, first_frame)
        h = silu(self.norm_out(h, z, first_frame))
        return self.conv_out(h, cache)
