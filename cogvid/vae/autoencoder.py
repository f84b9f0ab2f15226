"""The video autoencoder: encoder + Gaussian posterior + chunked decoder, loaded from ``3d-vae.pt``.

Scale factor: this module never applies ``model.scale_factor``. As in the original engine, the
caller multiplies the output of :meth:`VideoAutoencoder.encode` by ``scale_factor`` and divides
latents by it before :meth:`VideoAutoencoder.decode`. Layout everywhere: (B, C, T, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from cogvid.checkpoint import check_keys, load_weights_file
from cogvid.layout import is_diffusers_part
from cogvid.config import instantiate
from cogvid.errors import CheckpointError, ConfigError, MissingFileError, UsageError
from cogvid.spec import Generation
from cogvid.decode_schedule import SCHEDULES, DecodeChunk, chunk_pixel_frames, decode_plan  # noqa: F401 (re-exported)
from cogvid.vae.coders import Decoder3D, Encoder3D
from cogvid.vae.layers import ConvCache, FirstFrame

ProgressCallback = Callable[[int, int], None]



class DiagonalGaussianRegularizer(nn.Module):
    """Posterior of the encoder moments: ``mean, logvar = chunk(moments, 2, dim=1)``.

    ``sample=True`` (the original default, used even at inference for the I2V image) draws
    ``mean + std * noise``; ``sample=False`` returns the mean (the mode).
    """

    def __init__(self, sample: bool = True) -> None:
        super().__init__()
        self.sample = sample

    def forward(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = torch.chunk(moments, 2, dim=1)
        if not self.sample:
            return mean
        if generator is None:
            raise ValueError("sampling the VAE posterior needs an explicit torch.Generator (or sample=False)")
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * noise


class VideoAutoencoder(nn.Module):
    """The CogVideoX 3D causal VAE (``VideoAutoencoderInferenceWrapper``), built from the original YAML.

    ``generation`` ("1.0" or "1.5", chosen by the engine from the model config) selects the default
    decode schedule and the encoder's first-frame rule. The modules are built on the meta device
    (no memory, no random init); with ``ckpt_path`` the checkpoint tensors are assigned at once,
    without it they stay on meta until :meth:`load_checkpoint` or ``load_state_dict(...,
    assign=True)``.
    ``loss_config`` (training only) is accepted and ignored. ``cp_size`` is recorded only: like
    sample_video (which forces ``cp_size = 1``) the decode always follows the chunked schedule;
    use :func:`cogvid.vae.parallel.decode_parallel` to spread it over ranks with the same numbers.
    """

    def __init__(
        self,
        *,
        encoder_config: Any,
        decoder_config: Any,
        regularizer_config: Any = None,
        loss_config: Any = None,
        cp_size: int = 0,
        ckpt_path: Optional[str] = None,
        ignore_keys: list = (),
        generation: str | Generation = Generation.V1_0,
    ) -> None:
        super().__init__()
        try:
            self.generation = Generation(generation)
        except ValueError:
            known = ", ".join(g.value for g in Generation)
            raise ConfigError(f"unknown VAE generation {generation!r}", hint=f"use one of: {known}") from None
        self.cp_size = cp_size
        self.ignore_keys = tuple(ignore_keys)
        with torch.device("meta"):
            self.encoder = _build(encoder_config, Encoder3D, "encoder_config")
            self.decoder = _build(decoder_config, Decoder3D, "decoder_config")
        self.regularization = (
            _build(regularizer_config, DiagonalGaussianRegularizer, "regularizer_config")
            if regularizer_config is not None
            else DiagonalGaussianRegularizer()
        )
        upsamplers = [stage.upsample for stage in self.decoder.up if hasattr(stage, "upsample")]
        self.temporal_levels = sum(1 for upsample in upsamplers if upsample.compress_time)
        if ckpt_path is not None:
            self.load_checkpoint(ckpt_path)

    # ------------------------------------------------------------------ weights

    def load_checkpoint(self, path: str | Path) -> None:
        """Load a ``3d-vae.pt`` (``{"state_dict": ...}``), dropping ``loss*`` and ``ignore_keys`` keys.

        A folder with ``config.json`` is the ``vae/`` of a diffusers-layout model (its safetensors are read
        under the SAT names). Memory-mapped and ``weights_only``; every key and shape must match
        (CheckpointError if not).
        """
        expected = {name: tuple(tensor.shape) for name, tensor in self.state_dict().items()}
        if is_diffusers_part(path):
            from cogvid.diffusers_weights import read_vae

            levels = len(self.encoder.down)
            self.load_state_dict(read_vae(Path(path), expected, levels), strict=True, assign=True)
            return
        state = read_vae_state(path, ignore_keys=self.ignore_keys)
        check_keys(expected, state, what="VAE", source=str(path))
        self.load_state_dict(state, strict=True, assign=True)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.conv_in.conv.weight.dtype

    def require_weights(self) -> None:
        """Raise UsageError while the weights are still on the meta device (nothing loaded)."""
        if self.decoder.conv_in.conv.weight.is_meta:
            raise UsageError(
                "the VAE has no weights yet (built without ckpt_path)",
                hint="call load_checkpoint('vae/3d-vae.pt') first",
            )

    # ------------------------------------------------------------------ encode

    def encoder_first_frame(self) -> FirstFrame:
        # v1.0 keeps the first frame when the frame count is odd; HEAD always does (same for 1 or 4k+1 frames).
        return "odd" if self.generation is Generation.V1_0 else "always"

    @torch.no_grad()
    def encode_moments(self, x: torch.Tensor) -> torch.Tensor:
        """Video (B, 3, F, H, W) in [-1, 1] -> moments (B, 2*16, (F-1)/4+1, H/8, W/8): mean then logvar."""
        self.require_weights()
        return self.encoder(x.to(self.dtype), self.encoder_first_frame())

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Video (B, 3, F, H, W) -> latent (B, 16, T, h, w), NOT multiplied by ``scale_factor``.

        A posterior sample (the original default; needs ``generator``) or its mean when the
        regularizer has ``sample=False``.
        """
        return self.regularization(self.encode_moments(x), generator)

    # ------------------------------------------------------------------ decode

    def default_schedule(self) -> str:
        return self.generation.value

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        *,
        schedule: str | None = None,
        callback: ProgressCallback | None = None,
        tiling: bool = False,
        tile_size: int = 32,
        tile_overlap: int = 8,
    ) -> torch.Tensor:
        """Latents (B, 16, T, h, w), already divided by ``scale_factor`` -> frames (B, 3, F, 8h, 8w).

        Runs the original inference decode for ``schedule`` (default: this VAE's generation; see
        :func:`decode_plan`) one chunk at a time, so peak memory follows the chunk size.
        ``callback(chunk_index, num_chunks)`` runs after each chunk (0-based index; with tiling,
        chunks of all tiles are counted); a ``cogvid.errors.Cancelled`` it raises propagates.
        ``tiling=True`` decodes overlapping spatial tiles of ``tile_size`` latent pixels
        (``tile_overlap`` shared), each with the full chunk schedule, and blends them with linear
        ramps over the overlap: peak memory follows the tile, but the numbers change because
        GroupNorm statistics become per tile and convolutions see zero padding at tile edges.
        Measured on the tiny random-weight test VAE (12x12 latents, 5 frames): mean |error| 0.064
        (10% of the mean |value|), max 0.83 with tile 8 / overlap 4; 0.10 mean with tile 6 /
        overlap 3. It is off by default and never used for reference-identical output.
        Output values are roughly in [-1, 1] and not clamped.
        """
        self.require_weights()
        plan = decode_plan(z.shape[2], schedule or self.default_schedule())
        z = z.to(self.dtype)
        if not tiling:
            return self._decode_chunks(z, plan, callback, 0, len(plan))
        return self._decode_tiled(z, plan, callback, tile_size, tile_overlap)

    def _decode_chunks(
        self,
        z: torch.Tensor,
        plan: list[DecodeChunk],
        callback: ProgressCallback | None,
        done: int,
        total: int,
        cache: ConvCache | None = None,
    ) -> torch.Tensor:
        """Decode ``plan`` in order with one cache, writing into a preallocated output."""
        cache = ConvCache() if cache is None else cache
        frames = [chunk_pixel_frames(c.end - c.start, c.first_frame, self.temporal_levels) for c in plan]
        batch, _, _, height, width = z.shape
        scale = 2 ** (len(self.decoder.up) - 1)
        out = None
        offset = 0
        for index, chunk in enumerate(plan):
            piece = self.decoder(z[:, :, chunk.start : chunk.end], chunk.first_frame, cache)
            if out is None:
                out = piece.new_empty(batch, piece.shape[1], sum(frames), height * scale, width * scale)
            out[:, :, offset : offset + piece.shape[2]] = piece
            offset += piece.shape[2]
            del piece
            if callback is not None:
                callback(done + index, total)
        return out

    def _decode_tiled(
        self,
        z: torch.Tensor,
        plan: list[DecodeChunk],
        callback: ProgressCallback | None,
        tile_size: int,
        tile_overlap: int,
    ) -> torch.Tensor:
        if tile_size < 1 or not 0 <= tile_overlap < tile_size:
            raise UsageError(
                f"VAE tiling needs 0 <= tile_overlap < tile_size, found tile_size={tile_size}, tile_overlap={tile_overlap}"
            )
        height, width = z.shape[-2:]
        rows = _tile_starts(height, tile_size, tile_overlap)
        cols = _tile_starts(width, tile_size, tile_overlap)
        scale = 2 ** (len(self.decoder.up) - 1)
        total = len(rows) * len(cols) * len(plan)
        out = weight_sum = None
        done = 0
        for top in rows:
            for left in cols:
                tile_z = z[:, :, :, top : top + tile_size, left : left + tile_size]
                tile = self._decode_chunks(tile_z, plan, callback, done, total)
                done += len(plan)
                if out is None:
                    out = tile.new_zeros(*tile.shape[:3], height * scale, width * scale)
                    weight_sum = tile.new_zeros(height * scale, width * scale)
                weight = _blend_weight(
                    tile.shape[-2:], tile_overlap * scale, top > 0, left > 0,
                    top + tile_size < height, left + tile_size < width, tile,
                )
                rows_px = slice(top * scale, top * scale + tile.shape[-2])
                cols_px = slice(left * scale, left * scale + tile.shape[-1])
                out[..., rows_px, cols_px] += tile * weight
                weight_sum[rows_px, cols_px] += weight
        return out / weight_sum


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _blend_weight(
    shape: tuple[int, int], ramp: int, top: bool, left: bool, bottom: bool, right: bool, like: torch.Tensor
) -> torch.Tensor:
    """(H, W) weights: 1 inside, a linear ramp over ``ramp`` pixels on sides shared with a neighbour."""
    height, width = shape

    def axis(length: int, low: bool, high: bool) -> torch.Tensor:
        w = torch.ones(length, dtype=like.dtype, device=like.device)
        if ramp > 0:
            edge = (torch.arange(ramp, dtype=like.dtype, device=like.device) + 0.5) / ramp
            if low:
                w[:ramp] = torch.minimum(w[:ramp], edge)
            if high:
                w[-ramp:] = torch.minimum(w[-ramp:], edge.flip(0))
        return w

    return axis(height, top, bottom)[:, None] * axis(width, left, right)[None, :]


def _build(node: Any, expected: type, what: str) -> Any:
    built = instantiate(node)
    if not isinstance(built, expected):
        raise ConfigError(f"first_stage_config.params.{what}: expected a {expected.__name__} target, found {type(built).__name__}")
    return built


def read_vae_state(path: str | Path, ignore_keys: tuple[str, ...] = ("loss",)) -> dict[str, torch.Tensor]:
    """The VAE tensors of a ``3d-vae.pt``: its top-level ``state_dict`` minus ``loss*`` / ``ignore_keys``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"VAE checkpoint not found: {path}",
            hint="download the model's vae/3d-vae.pt into the weights folder (see `cogvid models show NAME`)",
        )
    data = load_weights_file(path, what="VAE checkpoint", redownload="download vae/3d-vae.pt again")
    if not isinstance(data, Mapping) or not isinstance(data.get("state_dict"), Mapping):
        raise CheckpointError(
            f"{path} is not a CogVideoX VAE checkpoint: expected a top-level 'state_dict' mapping",
            hint="use the 3d-vae.pt of the SAT release (vae/3d-vae.pt)",
        )
    drop = ("loss", *ignore_keys)
    state = {}
    for name, tensor in data["state_dict"].items():
        if any(str(name).startswith(prefix) for prefix in drop):
            continue
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} of 'state_dict' is not a tensor")
        state[str(name)] = tensor
    return state
