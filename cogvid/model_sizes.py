"""How many numbers each part of a CogVideoX model holds, counted from its merged configuration.

No torch and no weights: the counts follow the constructors of :mod:`cogvid.dit`, :mod:`cogvid.vae`
and the T5 encoder, so ``cogvid plan`` can size a model before anything is downloaded. A test
checks every count against the modules built on the meta device for each released model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

# T5 v1.1 XXL, the text encoder of every released CogVideoX model (its config.json), used when the
# folder is not there to read.
T5_XXL = {"vocab_size": 32128, "d_model": 4096, "d_kv": 64, "num_heads": 64, "d_ff": 10240, "num_layers": 24,
          "feed_forward_proj": "gated-gelu", "relative_attention_num_buckets": 32}


@dataclass(frozen=True)
class DiTSize:
    """Numbers (parameters and buffers) of the DiT: ``per_block`` in each of ``blocks`` layers, ``shared`` outside them.

    A block is a transformer layer together with its own AdaLN modulation and q/k norms (what the
    ``blocks`` offload streams); ``linear_per_block`` counts the 2-D weights among them.
    """

    shared: int
    per_block: int
    blocks: int
    linear_per_block: int
    hidden: int
    heads: int
    inner: int  # MLP width
    text_length: int  # positions the tables reserve for text (the run's text length is the T5 max_length)

    @property
    def total(self) -> int:
        return self.shared + self.per_block * self.blocks


@dataclass(frozen=True)
class VAESize:
    """Numbers of the VAE encoder and decoder, and the decoder's shape (for its activations)."""

    encoder: int
    decoder: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    out_channels: int
    temporal_levels: int

    @property
    def total(self) -> int:
        return self.encoder + self.decoder


@dataclass(frozen=True)
class T5Size:
    """Numbers of the T5 encoder; ``per_block`` in each of ``blocks`` blocks, ``shared`` outside them."""

    shared: int
    per_block: int
    blocks: int
    d_model: int
    d_ff: int
    heads: int
    d_kv: int
    max_length: int
    gated: bool

    @property
    def total(self) -> int:
        return self.shared + self.per_block * self.blocks


def _p(params: Any, key: str, default: Any = None) -> Any:
    value = params.get(key, default) if params is not None else default
    return default if value is None else value


def dit_size(network_config: Any) -> DiTSize:
    """Count the DiT of a ``network_config`` node (SAT BaseModel plus the CogVideoX mixins)."""
    params = network_config.params
    hidden, layers, heads = int(params.hidden_size), int(params.num_layers), int(params.num_attention_heads)
    time_dim = int(_p(params, "time_embed_dim", hidden))
    affine = bool(_p(params, "elementwise_affine", True))
    patch = params.patch_size
    patch_dims = (1, int(patch), int(patch)) if isinstance(patch, int) else tuple(int(p) for p in patch)
    in_ch, out_ch = int(params.in_channels), int(params.out_channels)
    modules = params.modules
    norm = 2 * hidden if affine else 0
    inner = 4 * hidden
    # A layer: fused qkv and output projection, the MLP, two LayerNorms.
    linear_layer = 3 * hidden * hidden + hidden * hidden + 2 * hidden * inner
    layer = linear_layer + 3 * hidden + hidden + inner + hidden + 2 * norm
    # AdaLN: one Linear(time, 12 H) per layer; q/k LayerNorms over the head dim.
    qk_ln = bool(_p(modules.adaln_layer_config.get("params"), "qk_ln", True))
    head_dim = hidden // heads
    per_block = layer + 12 * hidden * time_dim + 12 * hidden + (2 * 2 * head_dim if qk_ln and affine else 0)
    shared = norm  # the transformer's final LayerNorm
    shared += hidden * time_dim + time_dim + time_dim * time_dim + time_dim  # time_embed
    ofs = _p(params, "ofs_embed_dim")
    if ofs is not None:
        shared += 2 * (int(ofs) * int(ofs) + int(ofs))
    # Patch embedding: 1.0 a Conv2d(p, p), 1.5 a Linear over C*pt*ph*pw; the text projection.
    shared += in_ch * prod(patch_dims) * hidden + hidden
    text_hidden = _p(modules.patch_embed_config.get("params"), "text_hidden_size")
    if text_hidden is not None:
        shared += int(text_hidden) * hidden + hidden
    # Final layer: LayerNorm, Linear(H -> p*C), AdaLN Linear(time, 2 H).
    shared += norm + hidden * prod(patch_dims) * out_ch + prod(patch_dims) * out_ch + time_dim * 2 * hidden + 2 * hidden
    # Position tables.
    pos = modules.pos_embed_config
    pos_params = pos.get("params") or {}
    text_length = int(_p(pos_params, "text_length", 0))
    frames = (int(params.num_frames) - 1) // int(params.time_compressed_rate) + 1
    rows, cols = int(params.latent_height) // patch_dims[1], int(params.latent_width) // patch_dims[2]
    max_sequence = int(_p(params.transformer_args, "max_sequence_length", 0))
    if str(pos.target).endswith("Basic3DPositionEmbeddingMixin"):
        shared += (text_length + frames * rows * cols) * hidden  # the sin-cos table replaces SAT's
    else:
        shared += max_sequence * hidden  # SAT's unused position table
        if isinstance(patch, int):  # 1.0 checkpoints carry the RoPE angles as two buffers
            shared += 2 * frames * rows * cols * int(_p(pos_params, "hidden_size_head", head_dim))
        if bool(_p(pos_params, "learnable_pos_embed", False)):
            shared += (text_length + frames * rows * cols) * hidden
    return DiTSize(shared, per_block, layers, linear_layer + 12 * hidden * time_dim, hidden, heads, inner, text_length)


def _resnet(c_in: int, c_out: int, zq: int | None) -> int:
    def norm(c: int) -> int:
        return 2 * c + (2 * (zq * c + c) if zq is not None else 0)  # GroupNorm (+ SpatialNorm's two 1x1x1 convs)

    count = norm(c_in) + c_in * c_out * 27 + c_out + norm(c_out) + c_out * c_out * 27 + c_out
    return count + (c_in * c_out + c_out if c_in != c_out else 0)


def vae_size(first_stage_config: Any) -> VAESize:
    """Count the encoder and decoder of a ``first_stage_config`` node."""
    enc = first_stage_config.params.encoder_config.params
    dec = first_stage_config.params.decoder_config.params
    temporal = int(_p(dec, "temporal_compress_times", 4)).bit_length() - 1

    def conv3(c_in: int, c_out: int) -> int:
        return c_in * c_out * 27 + c_out

    ch, mult, blocks = int(enc.ch), [int(m) for m in enc.ch_mult], int(enc.num_res_blocks)
    z = int(enc.z_channels)
    encoder, block_in = conv3(int(enc.in_channels), ch), ch
    for level, m in enumerate(mult):
        for _ in range(blocks):
            encoder += _resnet(block_in, ch * m, None)
            block_in = ch * m
        if level != len(mult) - 1:
            encoder += 9 * block_in * block_in + block_in
    encoder += 2 * _resnet(block_in, block_in, None) + 2 * block_in
    encoder += conv3(block_in, 2 * z if bool(_p(enc, "double_z", True)) else z)

    ch, mult, blocks = int(dec.ch), [int(m) for m in dec.ch_mult], int(dec.num_res_blocks)
    z, zq = int(dec.z_channels), int(_p(dec, "zq_ch", dec.z_channels))
    block_in = ch * mult[-1]
    decoder = conv3(z, block_in) + 2 * _resnet(block_in, block_in, zq)
    for level in reversed(range(len(mult))):
        for _ in range(blocks + 1):
            decoder += _resnet(block_in, ch * mult[level], zq)
            block_in = ch * mult[level]
        if level != 0:
            decoder += 9 * block_in * block_in + block_in
    decoder += 2 * block_in + 2 * (zq * block_in + block_in) + conv3(block_in, int(dec.out_ch))
    return VAESize(encoder, decoder, ch, tuple(mult), blocks, z, int(dec.out_ch), temporal)


def t5_size(conditioner_config: Any, folder: Path | None = None) -> T5Size:
    """Count the T5 encoder from its folder's ``config.json`` (T5 v1.1 XXL when the folder is absent)."""
    embedder = conditioner_config.params.emb_models[0]
    max_length = int(_p(embedder.get("params"), "max_length", 77))
    cfg = dict(T5_XXL)
    if folder is not None and (Path(folder) / "config.json").is_file():
        try:
            cfg.update(json.loads((Path(folder) / "config.json").read_text()))
        except (OSError, ValueError):
            pass  # unreadable: the loader reports it; size as XXL here
    d_model, d_kv, heads, d_ff = int(cfg["d_model"]), int(cfg["d_kv"]), int(cfg["num_heads"]), int(cfg["d_ff"])
    gated = str(cfg.get("feed_forward_proj", "relu")).startswith("gated")
    inner = heads * d_kv
    per_block = 4 * d_model * inner + d_model + (3 if gated else 2) * d_model * d_ff + d_model
    buckets = int(cfg.get("relative_attention_num_buckets", 32))
    shared = int(cfg["vocab_size"]) * d_model + buckets * heads + d_model  # embedding, layer-0 position bias, final norm
    return T5Size(shared, per_block, int(cfg["num_layers"]), d_model, d_ff, heads, d_kv, max_length, gated)


__all__ = ["DiTSize", "T5Size", "VAESize", "dit_size", "t5_size", "vae_size"]
