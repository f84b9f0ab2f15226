"""Activation bytes of each stage, counted by walking the forward passes tensor by tensor (no torch).

The walks follow cogvid's own code (:mod:`cogvid.vae.layers`, :mod:`cogvid.vae.coders`, the AdaLN layer
of :mod:`cogvid.dit.mixins`, SAT's transformer loop, the T5 encoder) and count, op by op, the tensors
that stay referenced: an output is allocated while its inputs are still alive, and a tensor is
released where the Python code drops its last reference. The peak is the most bytes alive at once.
Kernel-internal scratch space (cuDNN / cuBLAS / attention workspaces) is not a tensor the code
holds: :mod:`cogvid.memory_plan` adds it separately.

Everything here is in bytes for one video (the sampler batches the unconditional and conditional
halves, so the DiT sees batch 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cogvid.decode_schedule import chunk_pixel_frames, keeps_first_frame
from cogvid.model_sizes import DiTSize, T5Size, VAESize


class Live:
    """Bytes alive during a walk, and the most alive at once."""

    def __init__(self, start: int = 0) -> None:
        self.now = start
        self.peak = start

    def add(self, nbytes: int) -> int:
        self.now += nbytes
        self.peak = max(self.peak, self.now)
        return nbytes

    def sub(self, *sizes: int) -> None:
        self.now -= sum(sizes)


# ------------------------------------------------------------------------------------------------
# DiT


def dit_step_bytes(dit: DiTSize, *, batch: int, text_tokens: int, video_tokens: int, item: int, rope: bool,
                   latent_bytes: int, input_bytes: int) -> int:
    """Peak activation bytes of one denoising step (one DiT forward on the CFG batch, plus sampler state).

    A layer's peak is in its MLP: with ``U = batch x tokens x hidden`` elements alive per full-width
    tensor, the layer input (held by SAT's loop), the attention output, the updated text/video
    streams, the modulated MLP input (text and video parts) and their concatenation are 5 U, and the
    first MLP projection and its GELU are 4 U each: 13 U. The attention half peaks lower (about 12 U:
    qkv 3 U, the q/k norms and the rotary temporaries). Besides: the cached RoPE cos/sin tables of the
    video grid, the DiT's input cast to its dtype, and the sampler's float32 latents (``latent_bytes``
    each; about 4 alive besides the DiT's: x, the solver's history and the denoised output; measured).
    """
    tokens = text_tokens + video_tokens
    unit = batch * tokens * dit.hidden * item
    layer_peak = 5 * unit + 2 * batch * tokens * dit.inner * item
    tables = 2 * video_tokens * (dit.hidden // dit.heads) * item if rope else 0
    return layer_peak + tables + input_bytes + 4 * latent_bytes


# ------------------------------------------------------------------------------------------------
# VAE decoder and encoder


@dataclass
class _T:
    """A tensor of the walk: its bytes and whether its memory is frame-major (what ``per_frame`` returns)."""

    nbytes: int
    frame_major: bool = False


@dataclass
class _VAEWalk:
    """Walks :class:`~cogvid.vae.coders.Decoder3D` / ``Encoder3D`` chunk by chunk."""

    live: Live
    item: int
    batch: int = 1
    zq_channels: int = 16
    cache: dict[str, int] | None = field(default=None)

    def vol(self, channels: int, frames: int, height: int, width: int) -> int:
        return self.batch * channels * frames * height * width * self.item

    def new(self, channels: int, frames: int, height: int, width: int, frame_major: bool = False) -> _T:
        return _T(self.live.add(self.vol(channels, frames, height, width)), frame_major)

    def free(self, *tensors: _T | None) -> None:
        self.live.sub(*(t.nbytes for t in tensors if t is not None))

    # -- layers (cogvid.vae.layers) ---------------------------------------------------------------

    def causal_conv(self, name: str, x: _T, c_in: int, c_out: int, shape: tuple[int, int, int], kernel: int = 3) -> _T:
        """``CausalConv3d``: front halo (cache or replicated first frame) -> cat -> pad -> conv."""
        frames, height, width = shape
        if kernel == 1:
            return self.new(c_out, frames, height, width)
        halo = kernel - 1
        cat = self.new(c_in, frames + halo, height, width)
        previous = 0
        if self.cache is not None:  # put(): the tail is cloned; the previous chunk's stays referenced until the call ends
            previous = self.cache.get(name, 0)
            self.cache[name] = self.live.add(self.vol(c_in, halo, height, width))
        pad = kernel // 2
        padded = self.new(c_in, frames + halo, height + 2 * pad, width + 2 * pad)
        self.free(cat)
        out = self.new(c_out, frames, height, width)
        self.free(padded)
        self.live.sub(previous)
        return out

    def group_norm(self, x: _T, channels: int, shape: tuple[int, int, int]) -> _T:
        """GroupNorm: a frame-major input is first copied to the standard layout."""
        copy = self.new(channels, *shape) if x.frame_major else None
        out = self.new(channels, *shape)
        self.free(copy)
        return out

    def spatial_norm(self, f: _T, channels: int, shape: tuple[int, int, int], first_frame: bool) -> _T:
        """``SpatialNorm3D``: resize zq to f, ``GroupNorm(f) * conv_y(zq) + conv_b(zq)``."""
        frames = shape[0]
        pieces: list[_T] = []
        if frames > 1 and first_frame:
            pieces = [self.new(self.zq_channels, 1, *shape[1:]), self.new(self.zq_channels, frames - 1, *shape[1:])]
        zq = self.new(self.zq_channels, *shape)
        norm = self.group_norm(f, channels, shape)
        scale = self.new(channels, *shape)
        product = self.new(channels, *shape)
        self.free(norm, scale)
        shift = self.new(channels, *shape)
        out = self.new(channels, *shape)
        self.free(product, shift, zq, *pieces)
        return out

    def silu(self, x: _T, channels: int, shape: tuple[int, int, int]) -> _T:
        sigmoid = self.new(channels, *shape)
        out = self.new(channels, *shape, frame_major=x.frame_major)
        self.free(sigmoid)
        return out

    def norm(self, x: _T, channels: int, shape: tuple[int, int, int], first_frame: bool | None) -> _T:
        """SpatialNorm in the decoder (``first_frame`` set), GroupNorm in the encoder (None)."""
        if first_frame is None:
            return self.group_norm(x, channels, shape)
        return self.spatial_norm(x, channels, shape, first_frame)

    def resnet(self, name: str, x: _T, c_in: int, c_out: int, shape: tuple[int, int, int], first_frame: bool | None) -> _T:
        """``ResnetBlock3D``: norm, silu, conv, norm, silu, conv, (1x1x1 shortcut), add."""
        normed = self.norm(x, c_in, shape, first_frame)
        h = self.silu(normed, c_in, shape)
        self.free(normed)
        h2 = self.causal_conv(f"{name}.conv1", h, c_in, c_out, shape)
        self.free(h)
        normed = self.norm(h2, c_out, shape, first_frame)
        h3 = self.silu(normed, c_out, shape)
        self.free(normed, h2)
        h4 = self.causal_conv(f"{name}.conv2", h3, c_out, c_out, shape)
        self.free(h3)
        if c_in != c_out:
            shortcut = self.new(c_out, *shape)
            out = self.new(c_out, *shape)
            self.free(shortcut)
        else:
            out = self.new(c_out, *shape, frame_major=x.frame_major)  # x + h keeps x's layout
        self.free(h4)
        return out

    def per_frame(self, x: _T, channels: int, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> _T:
        """A 2D op on every frame: the (B*T, C, H, W) input is a view of a frame-major tensor, else a copy."""
        flat = None if x.frame_major or shape[0] == 1 else self.new(channels, *shape)
        out = self.new(channels, *out_shape, frame_major=True)
        self.free(flat)
        return out

    def upsample(self, x: _T, channels: int, shape: tuple[int, int, int], compress_time: bool,
                 first_frame: bool) -> tuple[_T, tuple[int, int, int]]:
        frames, height, width = shape
        pieces: list[_T] = []
        if compress_time and frames > 1:
            if first_frame:
                pieces = [self.new(channels, 1, 2 * height, 2 * width), self.new(channels, 2 * (frames - 1), 2 * height, 2 * width)]
                frames = 2 * frames - 1
            else:
                frames = 2 * frames
            resized = self.new(channels, frames, 2 * height, 2 * width)
        else:
            resized = self.per_frame(x, channels, shape, (frames, 2 * height, 2 * width))
        out_shape = (frames, 2 * height, 2 * width)
        out = self.per_frame(resized, channels, out_shape, out_shape)
        self.free(resized, *pieces)
        return out, out_shape

    def downsample(self, x: _T, channels: int, shape: tuple[int, int, int], compress_time: bool) -> tuple[_T, tuple[int, int, int]]:
        """``DownSample3D`` on the one-frame clip of an image encode (no time pooling)."""
        frames, height, width = shape
        if compress_time and frames > 1:
            raise ValueError("the encoder walk covers one-frame images only")
        padded = self.new(channels, frames, height + 1, width + 1)
        out_shape = (frames, height // 2, width // 2)
        out = self.per_frame(padded, channels, (frames, height + 1, width + 1), out_shape)
        self.free(padded)
        return out, out_shape


def _decoder_call(walk: _VAEWalk, vae: VAESize, latents: int, height: int, width: int, policy: str) -> _T:
    """One ``Decoder3D`` call on a chunk of ``latents`` latent frames at ``height`` x ``width`` latents."""
    levels = len(vae.ch_mult)
    channels = vae.ch * vae.ch_mult[-1]
    shape = (latents, height, width)
    z = _T(0)  # the chunk is a view of the latents
    h = walk.causal_conv("conv_in", z, vae.z_channels, channels, shape)
    for index in (1, 2):
        h_next = walk.resnet(f"mid.block_{index}", h, channels, channels, shape, keeps_first_frame(policy, shape[0]))
        walk.free(h)
        h = h_next
    for level in reversed(range(levels)):
        out_channels = vae.ch * vae.ch_mult[level]
        for block in range(vae.num_res_blocks + 1):
            h_next = walk.resnet(f"up.{level}.block.{block}", h, channels, out_channels, shape, keeps_first_frame(policy, shape[0]))
            walk.free(h)
            h, channels = h_next, out_channels
        if level != 0:
            compress = level >= levels - vae.temporal_levels
            h_next, shape = walk.upsample(h, channels, shape, compress, keeps_first_frame(policy, shape[0]))
            walk.free(h)
            h = h_next
    normed = walk.spatial_norm(h, channels, shape, keeps_first_frame(policy, shape[0]))
    h2 = walk.silu(normed, channels, shape)
    walk.free(normed, h)
    out = walk.causal_conv("conv_out", h2, channels, vae.out_channels, shape)
    walk.free(h2)
    return out


def decode_bytes(vae: VAESize, chunks: list[tuple[int, str]], height: int, width: int, *, item: int,
                 tile: tuple[int, int] | None = None, latent_bytes: int = 0) -> int:
    """Peak bytes of a chunked decode (:meth:`VideoAutoencoder.decode`) of latents ``height`` x ``width``.

    ``chunks`` is the decode plan: (latent frames, first-frame policy) per decoder call, in order;
    the causal-conv cache carries from one call to the next. ``tile`` = (tile size, overlap) decodes
    overlapping spatial tiles, each with its own cache, blended into one output. ``latent_bytes``:
    the float32 latents the engine turns into the decoder input.
    """
    live = Live()
    # Engine.decode: a contiguous float32 copy divided by the scale factor (the copy goes), then the dtype cast.
    live.add(latent_bytes)
    live.add(latent_bytes)
    live.sub(latent_bytes)
    if item != 4:
        live.add(latent_bytes * item // 4)
    scale = 2 ** (len(vae.ch_mult) - 1)
    total_frames = sum(chunk_pixel_frames(n, policy, vae.temporal_levels) for n, policy in chunks)

    def frames_bytes(rows: int, cols: int) -> int:
        return vae.out_channels * total_frames * rows * scale * cols * scale * item

    regions: dict[tuple[int, int], tuple[int, int]] = {}

    def decode_region(rows: int, cols: int) -> int:
        """Decode every chunk of one region (tiles of one size walk alike: walked once); returns the bytes
        of its output, left alive."""
        if (rows, cols) not in regions:
            walk = _VAEWalk(Live(), item, cache={})
            output = 0
            for latents, policy in chunks:
                piece = _decoder_call(walk, vae, latents, rows, cols, policy)
                if not output:
                    output = walk.live.add(frames_bytes(rows, cols))
                walk.free(piece)
            regions[(rows, cols)] = (walk.live.peak, output)  # the cache goes with the region
        peak, output = regions[(rows, cols)]
        live.peak = max(live.peak, live.now + peak)
        return live.add(output)

    if tile is None:
        output = decode_region(height, width)
    else:
        size, overlap = tile
        row_sizes = [min(size, height)] * len(_tile_starts(height, size, overlap))
        col_sizes = [min(size, width)] * len(_tile_starts(width, size, overlap))
        previous, output = 0, 0
        for rows in row_sizes:
            for cols in col_sizes:
                tile_out = decode_region(rows, cols)
                live.sub(previous)  # the previous tile is dropped once the next is decoded
                if not output:
                    output = live.add(frames_bytes(height, width))  # blended output (+ a 2D weight sum)
                live.add(tile_out)  # tile * weight
                live.sub(tile_out)
                previous = tile_out
        live.add(output)  # out / weight_sum
        live.sub(output, previous)
    if item != 4:  # frames.float()
        live.add(frames_bytes(height, width) * 4 // item)
    return live.peak


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    return [*range(0, size - tile, tile - overlap), size - tile]


def encode_image_bytes(vae: VAESize, height: int, width: int, *, item: int) -> int:
    """Peak bytes of encoding one image (B=1, one frame, ``height`` x ``width`` pixels) with ``Encoder3D``."""
    live = Live()
    walk = _VAEWalk(live, item)
    image = walk.new(3, 1, height, width)
    levels = len(vae.ch_mult)
    shape = (1, height, width)
    channels = vae.ch
    h = walk.causal_conv("conv_in", image, 3, channels, shape)
    for level, mult in enumerate(vae.ch_mult):
        for block in range(vae.num_res_blocks):
            h_next = walk.resnet(f"down.{level}.{block}", h, channels, vae.ch * mult, shape, None)
            walk.free(h)
            h, channels = h_next, vae.ch * mult
        if level != levels - 1:
            h_next, shape = walk.downsample(h, channels, shape, level < vae.temporal_levels)
            walk.free(h)
            h = h_next
    for index in (1, 2):
        h_next = walk.resnet(f"mid.{index}", h, channels, channels, shape, None)
        walk.free(h)
        h = h_next
    normed = walk.group_norm(h, channels, shape)
    h2 = walk.silu(normed, channels, shape)
    walk.free(normed, h)
    walk.causal_conv("conv_out", h2, channels, 2 * vae.z_channels, shape)
    return live.peak


# ------------------------------------------------------------------------------------------------
# T5


def t5_encode_bytes(t5: T5Size, *, item: int, prompts: int = 1) -> int:
    """Peak activation bytes of encoding one prompt (run ``prompts`` times, one after the other).

    Per block: the hidden states, the layer norm, q/k/v, the scores with the position bias (kept for
    every layer), their float32 softmax and its cast, the context; the gated-GELU MLP holds its two
    input projections, the GELU and their product at the MLP width. The output (and the zero
    unconditional embedding) stay.
    """
    length = t5.max_length
    inner = t5.heads * t5.d_kv
    scores = t5.heads * length * length
    bias = scores * item
    attention = (2 * t5.d_model + 3 * inner) * length * item + 2 * scores * item + scores * 4
    mlp = 2 * t5.d_model * length * item + (4 if t5.gated else 2) * t5.d_ff * length * item
    outputs = 2 * prompts * length * t5.d_model * item
    return bias + max(attention, mlp) + outputs


__all__ = ["Live", "decode_bytes", "dit_step_bytes", "encode_image_bytes", "t5_encode_bytes"]
