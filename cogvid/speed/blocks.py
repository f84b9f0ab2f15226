"""The DiT's transformer blocks as modules of their own, run by :class:`BlockStack`.

SAT runs the blocks through hooks looked up by a layer-id tensor, which ``torch.compile`` cannot
compile once for all layers. :class:`DiTBlock` is one layer's computation over that layer's own
modules (the same parameters, the same operations in the same order as
:meth:`cogvid.dit.mixins.AdaLNMixin.layer_forward` and the attention it calls), so every block has
the same code and one compilation serves them all ("regional" compilation). :class:`BlockStack`
replaces SAT's layer loop in the DiT's forward when a speed option asks for it: embeddings and the
final layer still run through the DiT's own hooks; in between run the blocks (compiled or not, with
the attention kernel chosen) or a step cache that decides to skip them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogvid.dit.mixins import Rotary3DPositionEmbeddingMixin, modulate
from cogvid.dit.positions import rotate_half
from cogvid.speed.attention import KERNELS, Kernel


class DiTBlock(nn.Module):
    """One AdaLN "expert" transformer layer: ``forward(hidden, emb, text_length, cos, sin) -> hidden``.

    ``hidden`` is the [text; video] sequence (B, N_txt + N, H), ``emb`` the time embedding (B, D_t);
    ``cos``/``sin`` (1, 1, N, D) rotate the video queries and keys (None for the 2B's sin-cos model).
    """

    def __init__(self, layer: nn.Module, modulation: nn.Module, query_norm: nn.Module | None, key_norm: nn.Module | None,
                 rotate_values: bool, kernel: Kernel) -> None:
        super().__init__()
        self.layer = layer
        self.modulation = modulation
        self.query_norm = query_norm
        self.key_norm = key_norm
        self.rotate_values = rotate_values
        self.kernel = kernel
        self.head_dim = layer.attention.hidden_size_per_attention_head

    def forward(self, hidden: torch.Tensor, emb: torch.Tensor, text_length: int,
                cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        layer = self.layer
        text, video = hidden[:, :text_length], hidden[:, text_length:]  # (B, N_txt, H), (B, N, H)
        (
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp,
            text_shift_msa, text_scale_msa, text_gate_msa, text_shift_mlp, text_scale_mlp, text_gate_mlp,
        ) = self.modulation(emb).chunk(12, dim=1)  # (B, 12H) -> 12 x (B, H)

        video_in = modulate(layer.input_layernorm(video), shift_msa, scale_msa)
        text_in = modulate(layer.input_layernorm(text), text_shift_msa, text_scale_msa)
        attention = self.attend(torch.cat((text_in, video_in), dim=1), text_length, cos, sin)  # (B, N_txt + N, H)
        video = video + gate_msa.unsqueeze(1) * attention[:, text_length:]
        text = text + text_gate_msa.unsqueeze(1) * attention[:, :text_length]

        video_in = modulate(layer.post_attention_layernorm(video), shift_mlp, scale_mlp)
        text_in = modulate(layer.post_attention_layernorm(text), text_shift_mlp, text_scale_mlp)
        mlp = layer.mlp
        hidden_mlp = _linear(mlp.dense_4h_to_h, mlp.activation_func(_linear(mlp.dense_h_to_4h, torch.cat((text_in, video_in), dim=1))))
        video = video + gate_mlp.unsqueeze(1) * hidden_mlp[:, text_length:]
        text = text + text_gate_mlp.unsqueeze(1) * hidden_mlp[:, :text_length]
        return torch.cat((text, video), dim=1)  # (B, N_txt + N, H)

    def attend(self, hidden: torch.Tensor, text_length: int, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        """Self-attention of (B, N, H): qkv projection, qk-LayerNorm, RoPE on the video part, kernel, output projection."""
        attention = self.layer.attention
        batch, tokens = hidden.shape[:2]
        query, key, value = _linear(attention.query_key_value, hidden).chunk(3, dim=-1)  # (B, N, 3H) -> 3 x (B, N, H)
        query = query.view(batch, tokens, -1, self.head_dim).permute(0, 2, 1, 3)  # (B, N, H) -> (B, nh, N, D)
        key = key.view(batch, tokens, -1, self.head_dim).permute(0, 2, 1, 3)
        value = value.view(batch, tokens, -1, self.head_dim).permute(0, 2, 1, 3)
        if self.query_norm is not None:
            query, key = self.query_norm(query), self.key_norm(key)  # per head, over D
        if cos is not None:
            query = torch.cat((query[:, :, :text_length], _rotate(query[:, :, text_length:], cos, sin)), dim=2)
            key = torch.cat((key[:, :, :text_length], _rotate(key[:, :, text_length:], cos, sin)), dim=2)
            if self.rotate_values:
                value = torch.cat((value[:, :, :text_length], _rotate(value[:, :, text_length:], cos, sin)), dim=2)
        context = self.kernel(query, key, value)  # (B, nh, N, D)
        context = context.permute(0, 2, 1, 3).contiguous()  # (B, nh, N, D) -> (B, N, nh, D)
        return _linear(attention.dense, context.view(batch, tokens, -1))  # (B, N, nh*D) -> (B, N, H)


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for SAT's column/row-parallel linears at model-parallel size 1, as plain
    ``F.linear`` (the same operations, without the process-group queries torch.compile cannot trace)."""
    kind = type(module).__name__
    if kind == "ColumnParallelLinear":
        return F.linear(x, module.weight, module.bias)
    if kind == "RowParallelLinear":
        if module.bias is None:
            return F.linear(x, module.weight)
        if module.final_bias:
            return F.linear(x, module.weight) + module.bias
        return F.linear(x, module.weight, module.bias)
    return module(x)  # nn.Linear, SAT's LoRA linears


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class BlockStack:
    """Runs the DiT's trunk (embeddings, blocks, final layer) in place of SAT's layer loop.

    Not an ``nn.Module`` on purpose: it holds the DiT's own modules, which must not appear twice in
    its state dict. ``kernel`` is the attention kernel's name; ``compiled`` wraps each block in
    ``torch.compile`` (one compilation for all of them); ``cache`` (set per video by
    :func:`cogvid.speed.cache.step_cache`) may skip blocks.
    """

    def __init__(self, dit: nn.Module, kernel: str = "sdpa", compiled: bool = False) -> None:
        adaln = dit.mixins["adaln_layer"]
        position = dit.mixins["pos_embed"]
        self.dit = dit
        self.kernel = kernel
        self.compiled = compiled
        self.rotary = position if isinstance(position, Rotary3DPositionEmbeddingMixin) else None
        rotate_values = bool(self.rotary is not None and self.rotary.rot_v)
        self.blocks = [
            DiTBlock(
                layer,
                adaln.adaLN_modulations[index],
                adaln.query_layernorm_list[index] if adaln.qk_ln else None,
                adaln.key_layernorm_list[index] if adaln.qk_ln else None,
                rotate_values,
                KERNELS[kernel],
            )
            for index, layer in enumerate(dit.transformer.layers)
        ]
        self.runners: list[Any] = [torch.compile(block) for block in self.blocks] if compiled else list(self.blocks)
        self.cache: Any = None

    def __call__(self, ones: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """The DiT output for the keyword arguments :meth:`DiffusionTransformer.forward` prepared."""
        dit, transformer = self.dit, self.dit.transformer
        hooks = dit.hooks
        transformer.hooks.clear()
        transformer.hooks.update(hooks)  # as SAT's BaseModel.forward does
        hidden = hooks["word_embedding_forward"](ones, output_cross_layer={}, **kwargs)  # (B, N_txt + N, H)
        if "position_embedding_forward" in hooks:
            positions = hooks["position_embedding_forward"](ones, output_cross_layer={}, **kwargs)
            if positions is not None:
                hidden = hidden + positions
        hidden = transformer.embedding_dropout(hidden)
        cos = sin = None
        if self.rotary is not None:
            cos, sin = self.rotary.cos_sin(kwargs["rope_T"], kwargs["rope_H"], kwargs["rope_W"], hidden)
        emb, text_length = kwargs["emb"], int(kwargs["text_length"])
        if self.cache is not None:
            hidden = self.cache.run(self.runners, hidden, emb, text_length, cos, sin)
        else:
            for run in self.runners:
                hidden = run(hidden, emb, text_length, cos, sin)
        if transformer.use_final_layernorm:
            hidden = transformer.final_layernorm(hidden)
        return hooks["final_forward"](hidden, **kwargs, parallel_output=transformer.parallel_output)


__all__ = ["BlockStack", "DiTBlock"]
