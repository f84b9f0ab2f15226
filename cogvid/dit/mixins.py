"""SAT mixins of the CogVideoX DiT: patch embedding, position embeddings, AdaLN layers, final layer, LoRA.

Names, parameters and state-dict keys follow the original ``dit_video_concat`` module (v1.0
for CogVideoX-2B/5B/5B-I2V, HEAD for CogVideoX1.5). Per-call geometry comes from the forward
keyword arguments the DiT sets: ``text_length``, ``rope_T``/``rope_H``/``rope_W`` (the patch
grid of the actual input), ``seq_length``, ``images``, ``encoder_outputs`` and ``emb``.
"""

from __future__ import annotations

from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogvid.dit import positions
from cogvid.dit._sat import HOOKS_DEFAULT, BaseMixin, LayerNorm, SatLoraMixin, non_conflict
from cogvid.errors import UsageError

_TABLE_CACHE_SIZE = 4


def _patch_dims(patch_size: int | list[int]) -> tuple[int, int, int]:
    """(pt, ph, pw): an int patch is the 1.0 spatial Conv2d patch (temporal patch 1)."""
    if isinstance(patch_size, int):
        return 1, patch_size, patch_size
    pt, ph, pw = (int(p) for p in patch_size)
    return pt, ph, pw


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with (B, D) modulation broadcast over the tokens of (B, N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class ImagePatchEmbeddingMixin(BaseMixin):
    """Video patches and text tokens -> the [text; video] token sequence.

    An int ``patch_size`` is the 1.0 per-frame ``Conv2d(k=p, s=p)``; a ``[pt, ph, pw]`` list is
    the 1.5 ``Linear(C_in*pt*ph*pw -> H)`` over features ordered (c, o, p, q).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_size: int,
        patch_size: int | list[int],
        bias: bool = True,
        text_hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        if isinstance(patch_size, int):
            self.proj: nn.Module = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=bias)
        else:
            self.proj = nn.Linear(in_channels * prod(patch_size), hidden_size)
        self.text_proj = nn.Linear(text_hidden_size, hidden_size) if text_hidden_size is not None else None

    def word_embedding_forward(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        images = kwargs["images"]  # (B, T, C, h, w)
        batch, frames = images.shape[:2]
        if isinstance(self.patch_size, int):
            emb = self.proj(images.flatten(0, 1))  # (B*T, C, h, w) -> (B*T, H, h/p, w/p)
            emb = emb.unflatten(0, (batch, frames))  # (B*T, H, h', w') -> (B, T, H, h', w')
            emb = emb.flatten(3).transpose(2, 3).flatten(1, 2)  # (B, T, H, h'*w') -> (B, T*h'*w', H)
        else:
            pt, ph, pw = _patch_dims(self.patch_size)
            t, h, w = kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"]
            channels = images.shape[2]
            emb = images.reshape(batch, t, pt, channels, h, ph, w, pw)  # (B, T, C, h, w) -> (B, t, o, C, h', p, w', q)
            emb = emb.permute(0, 1, 4, 6, 3, 2, 5, 7)  # -> (B, t, h', w', C, o, p, q)
            emb = emb.reshape(batch, t * h * w, channels * pt * ph * pw)  # -> (B, t*h'*w', C*o*p*q)
            emb = self.proj(emb)  # (B, N, C*o*p*q) -> (B, N, H)
        if self.text_proj is not None:
            text = self.text_proj(kwargs["encoder_outputs"])  # (B, N_txt, 4096) -> (B, N_txt, H)
            emb = torch.cat((text, emb), dim=1)  # (B, N_txt + N, H)
        return emb.contiguous()

    def reinit(self, parent_model: Any = None) -> None:
        weight = self.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        if self.proj.bias is not None:
            nn.init.constant_(self.proj.bias, 0)
        del self.transformer.word_embeddings


class Basic3DPositionEmbeddingMixin(BaseMixin):
    """The 2B's fixed 3D sin-cos position table, added to the [text; video] sequence (text rows 0).

    The original slices a table built for its training grid, so it is only right at that grid.
    Here the stored table (``pos_embedding``, as in the checkpoint) is sliced exactly like the
    original when the input grid has the training rows/columns and at most the training frame
    count; any other grid gets the same sin-cos formula evaluated on the actual grid.
    """

    def __init__(
        self,
        height: int,
        width: int,
        compressed_num_frames: int,
        hidden_size: int,
        text_length: int = 0,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
    ) -> None:
        super().__init__()
        self.height, self.width, self.compressed_num_frames = height, width, compressed_num_frames
        self.text_length = text_length
        self.hidden_size = hidden_size
        self.num_patches = height * width * compressed_num_frames
        self.interpolation = (height_interpolation, width_interpolation, time_interpolation)
        self.pos_embedding = nn.Parameter(torch.zeros(1, text_length + self.num_patches, hidden_size), requires_grad=False)
        self._tables: dict[tuple[Any, ...], torch.Tensor] = {}

    def video_table(self, frames: int, rows: int, cols: int) -> torch.Tensor:
        """(frames*rows*cols, H) float32 sin-cos table for a patch grid."""
        h_interp, w_interp, t_interp = self.interpolation
        return positions.sincos_3d_table(self.hidden_size, frames, rows, cols, h_interp, w_interp, t_interp)

    def position_embedding_forward(self, position_ids: Any, **kwargs: Any) -> torch.Tensor:
        t, h, w, text_length = kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"], kwargs["text_length"]
        table = self.pos_embedding
        if (h, w) == (self.height, self.width) and t <= self.compressed_num_frames and text_length == self.text_length:
            return table[:, : text_length + t * h * w]  # the original's slice
        key = (t, h, w, text_length, table.device, table.dtype)
        if key not in self._tables:
            if len(self._tables) >= _TABLE_CACHE_SIZE:
                self._tables.clear()
            video = self.video_table(t, h, w)  # (t*h*w, H)
            full = torch.cat([torch.zeros(text_length, self.hidden_size), video])  # (N_txt + t*h*w, H)
            self._tables[key] = full.unsqueeze(0).to(device=table.device, dtype=table.dtype)  # (1, N, H)
        return self._tables[key]

    def fill_table_(self) -> None:
        """Write the training-grid table into ``pos_embedding`` (as the original's reinit does)."""
        table = self.video_table(self.compressed_num_frames, self.height, self.width)  # (t*h*w, H)
        with torch.no_grad():
            self.pos_embedding[:, self.text_length :].copy_(table.unsqueeze(0))
            self.pos_embedding[:, : self.text_length].zero_()

    def reinit(self, parent_model: Any = None) -> None:
        del self.transformer.position_embeddings
        if not self.pos_embedding.is_meta:
            self.fill_table_()


class Rotary3DPositionEmbeddingMixin(BaseMixin):
    """3D rotary embedding of the video tokens' queries and keys (5B, 5B-I2V, 1.5).

    Angles are computed for the actual patch grid (``rope_T`` x ``rope_H`` x ``rope_W``), which
    equals the original v1.0 (first-N-rows of the training table) at its training grid and the
    HEAD slicing everywhere. ``freqs_sin``/``freqs_cos`` are kept as buffers only when
    ``persistent_freqs`` (v1.0 checkpoints carry them); they are not used by ``forward``.
    ``learnable_pos_embed`` (5B-I2V) adds a learned (1, N_txt + T*h*w, H) table, which only
    exists for the training grid: inputs with other rows/columns or more frames are refused.
    """

    def __init__(
        self,
        height: int,
        width: int,
        compressed_num_frames: int,
        hidden_size: int,
        hidden_size_head: int,
        text_length: int,
        theta: float = 10000,
        rot_v: bool = False,
        learnable_pos_embed: bool = False,
        height_interpolation: float = 1.0,
        width_interpolation: float = 1.0,
        time_interpolation: float = 1.0,
        persistent_freqs: bool = False,
    ) -> None:
        super().__init__()
        self.height, self.width, self.compressed_num_frames = height, width, compressed_num_frames
        self.hidden_size_head, self.theta, self.rot_v = hidden_size_head, float(theta), rot_v
        self.text_length = text_length
        if persistent_freqs:
            angles = positions.rope_3d_angles(hidden_size_head, compressed_num_frames, height, width, self.theta)
            self.register_buffer("freqs_sin", angles.sin())
            self.register_buffer("freqs_cos", angles.cos())
        if learnable_pos_embed:
            num_patches = height * width * compressed_num_frames + text_length
            self.pos_embedding: nn.Parameter | None = nn.Parameter(torch.zeros(1, num_patches, hidden_size))
        else:
            self.pos_embedding = None
        self._tables: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def fill_freqs_(self) -> None:
        """Recompute the ``freqs_sin``/``freqs_cos`` buffers (values fixed by the config)."""
        angles = positions.rope_3d_angles(self.hidden_size_head, self.compressed_num_frames, self.height, self.width, self.theta)
        for name, values in (("freqs_sin", angles.sin()), ("freqs_cos", angles.cos())):
            buffer = getattr(self, name)
            setattr(self, name, values.to(device=buffer.device, dtype=buffer.dtype))

    def cos_sin(self, t: int, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 1, t*h*w, head_dim) cos and sin tables in ``like``'s dtype and device."""
        key = (t, h, w, like.device, like.dtype)
        if key not in self._tables:
            if len(self._tables) >= _TABLE_CACHE_SIZE:
                self._tables.clear()
            angles = positions.rope_3d_angles(self.hidden_size_head, t, h, w, self.theta)  # (t*h*w, D)
            self._tables[key] = tuple(  # type: ignore[assignment]
                v[None, None].to(device=like.device, dtype=like.dtype) for v in (angles.cos(), angles.sin())
            )  # (t*h*w, D) -> (1, 1, t*h*w, D)
        return self._tables[key]

    def rotary(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Rotate (B, nh, N_video, D) by the video grid's angles."""
        cos, sin = self.cos_sin(kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"], x)
        return x * cos + positions.rotate_half(x) * sin

    def position_embedding_forward(self, position_ids: Any, **kwargs: Any) -> torch.Tensor | None:
        if self.pos_embedding is None:
            return None
        t, h, w, text_length = kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"], kwargs["text_length"]
        if (h, w) != (self.height, self.width) or t > self.compressed_num_frames or text_length != self.text_length:
            raise UsageError(
                f"this model's learned position table covers {self.compressed_num_frames} x {self.height} x "
                f"{self.width} patches and {self.text_length} text tokens; the input has {t} x {h} x {w} "
                f"patches and {text_length} text tokens",
                hint=f"use a latent of {self.height * 2} x {self.width * 2} (a {self.height * 16} x "
                f"{self.width * 16} video) with at most {self.compressed_num_frames} latent frames",
            )
        return self.pos_embedding[:, : text_length + kwargs["seq_length"]]

    def attention_fn(
        self,
        query_layer: torch.Tensor,
        key_layer: torch.Tensor,
        value_layer: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_dropout: nn.Module | None = None,
        log_attention_weights: Any = None,
        scaling_attention_score: bool = True,
        **kwargs: Any,
    ) -> torch.Tensor:
        text_length = kwargs["text_length"]
        query_layer = torch.cat((query_layer[:, :, :text_length], self.rotary(query_layer[:, :, text_length:], **kwargs)), dim=2)
        key_layer = torch.cat((key_layer[:, :, :text_length], self.rotary(key_layer[:, :, text_length:], **kwargs)), dim=2)
        if self.rot_v:
            value_layer = torch.cat((value_layer[:, :, :text_length], self.rotary(value_layer[:, :, text_length:], **kwargs)), dim=2)
        dropout_p = attention_dropout.p if attention_dropout is not None and attention_dropout.training else 0.0
        return F.scaled_dot_product_attention(query_layer, key_layer, value_layer, dropout_p=dropout_p)  # (B, nh, N, D)


class AdaLNMixin(BaseMixin):
    """AdaLN-zero "expert" layers: separate text/video modulation (12 chunks per layer), qk-LayerNorm."""

    def __init__(
        self,
        hidden_size: int,
        num_layers: int,
        time_embed_dim: int,
        compressed_num_frames: int,
        qk_ln: bool = True,
        hidden_size_head: int | None = None,
        elementwise_affine: bool = True,
        width: int | None = None,
        height: int | None = None,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.compressed_num_frames = compressed_num_frames
        self.adaLN_modulations = nn.ModuleList(
            [nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 12 * hidden_size)) for _ in range(num_layers)]
        )
        self.qk_ln = qk_ln
        if qk_ln:
            self.query_layernorm_list = nn.ModuleList(
                [LayerNorm(hidden_size_head, eps=1e-6, elementwise_affine=elementwise_affine) for _ in range(num_layers)]
            )
            self.key_layernorm_list = nn.ModuleList(
                [LayerNorm(hidden_size_head, eps=1e-6, elementwise_affine=elementwise_affine) for _ in range(num_layers)]
            )

    def layer_forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        text_length, layer_id = kwargs["text_length"], kwargs["layer_id"]
        layer = self.transformer.layers[layer_id]
        text, video = hidden_states[:, :text_length], hidden_states[:, text_length:]  # (B, N_txt, H), (B, N, H)
        (
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp,
            text_shift_msa, text_scale_msa, text_gate_msa, text_shift_mlp, text_scale_mlp, text_gate_mlp,
        ) = self.adaLN_modulations[layer_id](kwargs["emb"]).chunk(12, dim=1)  # (B, 12H) -> 12 x (B, H)

        video_in = modulate(layer.input_layernorm(video), shift_msa, scale_msa)
        text_in = modulate(layer.input_layernorm(text), text_shift_msa, text_scale_msa)
        attention = layer.attention(torch.cat((text_in, video_in), dim=1), mask, **kwargs)  # (B, N_txt + N, H)
        video = video + gate_msa.unsqueeze(1) * attention[:, text_length:]
        text = text + text_gate_msa.unsqueeze(1) * attention[:, :text_length]

        video_in = modulate(layer.post_attention_layernorm(video), shift_mlp, scale_mlp)
        text_in = modulate(layer.post_attention_layernorm(text), text_shift_mlp, text_scale_mlp)
        mlp = layer.mlp(torch.cat((text_in, video_in), dim=1), **kwargs)  # (B, N_txt + N, H)
        video = video + gate_mlp.unsqueeze(1) * mlp[:, text_length:]
        text = text + text_gate_mlp.unsqueeze(1) * mlp[:, :text_length]
        return torch.cat((text, video), dim=1)  # (B, N_txt + N, H)

    def reinit(self, parent_model: Any = None) -> None:
        for modulation in self.adaLN_modulations:
            nn.init.constant_(modulation[-1].weight, 0)
            nn.init.constant_(modulation[-1].bias, 0)

    @non_conflict
    def attention_fn(
        self,
        query_layer: torch.Tensor,
        key_layer: torch.Tensor,
        value_layer: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_dropout: nn.Module | None = None,
        log_attention_weights: Any = None,
        scaling_attention_score: bool = True,
        old_impl: Any = HOOKS_DEFAULT["attention_fn"],
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.qk_ln:
            query_layer = self.query_layernorm_list[kwargs["layer_id"]](query_layer)  # per head, over D
            key_layer = self.key_layernorm_list[kwargs["layer_id"]](key_layer)
        return old_impl(
            query_layer,
            key_layer,
            value_layer,
            attention_mask,
            attention_dropout=attention_dropout,
            log_attention_weights=log_attention_weights,
            scaling_attention_score=scaling_attention_score,
            **kwargs,
        )


class FinalLayerMixin(BaseMixin):
    """Final AdaLN (LayerNorm eps 1e-6, shift first), projection and unpatchify to (B, T, C_out, h, w).

    Unpatchify uses the actual grid (``rope_*``); the v1.0 original used the config latent size,
    which is the same grid at its training resolution.
    """

    def __init__(
        self,
        hidden_size: int,
        time_embed_dim: int,
        patch_size: int | list[int],
        out_channels: int,
        latent_width: int,
        latent_height: int,
        elementwise_affine: bool,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.latent_width, self.latent_height = latent_width, latent_height
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=elementwise_affine, eps=1e-6)
        self.linear = nn.Linear(hidden_size, prod(_patch_dims(patch_size)) * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 2 * hidden_size, bias=True))

    def final_forward(self, logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.unpatchify(self.project(logits, **kwargs), **kwargs)

    def project(self, logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The per-token part: (B, N_txt + N, H) -> (B, N, c*o*p*q) for the video tokens."""
        x = logits[:, kwargs["text_length"] :]  # (B, N_txt + N, H) -> (B, N, H)
        shift, scale = self.adaLN_modulation(kwargs["emb"]).chunk(2, dim=1)  # 2 x (B, H)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, c*o*p*q)

    def unpatchify(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Projected video tokens (B, t*h*w, c*o*p*q) -> latents (B, T, c, H_lat, W_lat) on the ``rope_*`` grid."""
        pt, ph, pw = _patch_dims(self.patch_size)
        t, h, w, c = kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"], self.out_channels
        x = x.reshape(x.shape[0], t, h, w, c, pt, ph, pw)  # (B, t*h*w, c*o*p*q) -> (B, t, h, w, c, o, p, q)
        x = x.permute(0, 1, 5, 4, 2, 6, 3, 7)  # -> (B, t, o, c, h, p, w, q)
        return x.reshape(x.shape[0], t * pt, c, h * ph, w * pw)  # -> (B, T, c, H_lat, W_lat)

    def reinit(self, parent_model: Any = None) -> None:
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.constant_(self.linear.bias, 0)


class LoraMixin(SatLoraMixin):
    """SAT's own ``sat.model.finetune.lora2.LoraMixin`` (qkv and dense of each layer), typed for the config."""

    def __init__(
        self,
        layer_num: int,
        r: int = 0,
        lora_alpha: float = 1,
        lora_dropout: float = 0.0,
        layer_range: list[int] | None = None,
        qlora: bool = False,
        cross_attention: bool = True,
    ) -> None:
        if r <= 0:
            from cogvid.errors import ConfigError

            raise ConfigError(f"lora_config.params.r must be a positive rank, got {r}")
        super().__init__(layer_num, r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, layer_range=layer_range,
                         qlora=qlora, cross_attention=cross_attention)
