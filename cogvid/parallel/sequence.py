"""Ulysses sequence parallelism for the SAT DiT: each process holds the text tokens and a run of the video tokens.

:func:`sequence_parallel` adds :class:`UlyssesMixin` to a loaded DiT for the duration of a block
(SAT ``non_conflict`` hooks wrapping the DiT's own, removed afterwards):

* ``word_embedding_forward`` / ``position_embedding_forward``: keep the text rows and this
  process's video rows (:func:`cogvid.parallel.sequence_shard`), so the sin-cos table (2B) and the
  learned table (5B-I2V) are added to the right tokens; the patch embedding itself (1.0 per-frame
  Conv2d, 1.5 patch-t Linear, the 1.5 padding latent) runs on the whole input as before.
* ``attention_fn`` (outermost): the video queries, keys and values go from "all heads, my tokens"
  to "my heads, all tokens" with yunchang's all-to-all (``all_to_all_4D``, built on
  ``torch.distributed.all_to_all_single``); the text rows of my heads are taken locally. The DiT's
  own attention chain (qk-LayerNorm, 3D RoPE on the full video grid, SDPA) then runs unchanged on
  ``heads / P`` heads; the video output goes back with the inverse all-to-all and the text output's
  heads are all-gathered.
* ``final_forward``: the final AdaLN and projection run on this process's tokens; the projected
  tokens are all-gathered and unpatchified on every process.

Layer norms, AdaLN modulation and the MLP act per token, so every process computes exactly the rows
the single-process DiT computes for its tokens. The caller owns the process group.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cogvid.dit._sat import HOOKS_DEFAULT, BaseMixin, non_conflict
from cogvid.errors import UsageError
from cogvid.parallel import sequence_degree_ok, sequence_shard, valid_sequence_degrees

MIXIN_NAME = "ulysses"


def _all_to_all_4d(tensor: torch.Tensor, scatter_idx: int, gather_idx: int, group: Any) -> torch.Tensor:
    from yunchang.comm.all_to_all import all_to_all_4D

    return all_to_all_4D(tensor, scatter_idx=scatter_idx, gather_idx=gather_idx, group=group)


def _all_gather(tensor: torch.Tensor, group: Any, dim: int) -> torch.Tensor:
    """Every process's ``tensor`` (same shape on all), concatenated along ``dim`` in rank order."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def _pad_tokens(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """``x`` zero-padded at the end of ``dim`` to ``size`` rows."""
    missing = size - x.shape[dim]
    if missing == 0:
        return x
    pad = [0, 0] * (x.ndim - 1 - dim) + [0, missing]
    return F.pad(x, pad)


class UlyssesMixin(BaseMixin):
    """Splits the video tokens of every DiT call over a process group (see the module docstring)."""

    def __init__(self, final_layer: Any, heads: int, group: Any = None) -> None:
        super().__init__()
        self.group = group
        self.degree = dist.get_world_size(group)
        self.index = dist.get_rank(group)
        self.heads = heads
        object.__setattr__(self, "final_layer", final_layer)  # a reference, not a submodule (no state keys)

    # ------------------------------------------------------------------ geometry

    def _tokens(self, kwargs: dict[str, Any]) -> int:
        return kwargs["rope_T"] * kwargs["rope_H"] * kwargs["rope_W"]

    def _shard(self, tokens: int) -> tuple[int, int, int]:
        """(start, end, padded shard size) of this process's video tokens."""
        if not sequence_degree_ok(self.degree, self.heads, tokens):
            degrees = ", ".join(str(d) for d in valid_sequence_degrees(self.heads, tokens) if d > 1) or "none"
            raise UsageError(
                f"{self.degree} processes cannot split {self.heads} attention heads and {tokens} video tokens",
                hint=f"valid sequence-parallel process counts here: {degrees}",
            )
        start, end = sequence_shard(tokens, self.degree, self.index)
        return start, end, -(-tokens // self.degree)

    def _local_rows(self, full: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
        """(b, N_txt + N, H) -> (b, N_txt + n_mine, H): the text rows and this process's video rows."""
        text_length = kwargs["text_length"]
        start, end, _ = self._shard(self._tokens(kwargs))
        return torch.cat((full[:, :text_length], full[:, text_length + start : text_length + end]), dim=1)

    # ------------------------------------------------------------------ hooks

    @non_conflict
    def word_embedding_forward(self, input_ids: Any, old_impl: Any = None, **kwargs: Any) -> torch.Tensor:
        return self._local_rows(old_impl(input_ids, **kwargs), kwargs)

    @non_conflict
    def position_embedding_forward(self, position_ids: Any, old_impl: Any = None, **kwargs: Any) -> torch.Tensor | None:
        table = old_impl(position_ids, **kwargs)
        return None if table is None else self._local_rows(table, kwargs)

    @non_conflict
    def attention_fn(
        self,
        query_layer: torch.Tensor,
        key_layer: torch.Tensor,
        value_layer: torch.Tensor,
        attention_mask: torch.Tensor,
        attention_dropout: Any = None,
        log_attention_weights: Any = None,
        scaling_attention_score: bool = True,
        old_impl: Any = HOOKS_DEFAULT["attention_fn"],
        **kwargs: Any,
    ) -> torch.Tensor:
        text_length, tokens = kwargs["text_length"], self._tokens(kwargs)
        _, _, shard = self._shard(tokens)
        local_heads = query_layer.shape[1] // self.degree
        mine = slice(self.index * local_heads, (self.index + 1) * local_heads)

        def to_heads(x: torch.Tensor) -> torch.Tensor:  # (b, nh, N_txt + n, D) -> (b, nh/P, N_txt + N, D)
            video = _pad_tokens(x[:, :, text_length:], shard, dim=2).transpose(1, 2).contiguous()  # (b, S, nh, D)
            video = _all_to_all_4d(video, 2, 1, self.group)  # (b, S, nh, D) -> (b, P*S, nh/P, D)
            video = video[:, :tokens].transpose(1, 2)  # -> (b, nh/P, N, D)
            return torch.cat((x[:, mine, :text_length], video), dim=2)

        out = old_impl(
            to_heads(query_layer),
            to_heads(key_layer),
            to_heads(value_layer),
            attention_mask,
            attention_dropout=attention_dropout,
            log_attention_weights=log_attention_weights,
            scaling_attention_score=scaling_attention_score,
            **kwargs,
        )  # (b, nh/P, N_txt + N, D)
        text = _all_gather(out[:, :, :text_length], self.group, dim=1)  # (b, nh/P, N_txt, D) -> (b, nh, N_txt, D)
        video = _pad_tokens(out[:, :, text_length:], shard * self.degree, dim=2).transpose(1, 2).contiguous()  # (b, P*S, nh/P, D)
        video = _all_to_all_4d(video, 1, 2, self.group)  # (b, P*S, nh/P, D) -> (b, S, nh, D)
        local = query_layer.shape[2] - text_length
        video = video[:, :local].transpose(1, 2)  # -> (b, nh, n, D)
        return torch.cat((text, video), dim=2)

    @non_conflict
    def final_forward(self, logits: torch.Tensor, old_impl: Any = None, **kwargs: Any) -> torch.Tensor:
        tokens = self._tokens(kwargs)
        _, _, shard = self._shard(tokens)
        projected = self.final_layer.project(logits, **kwargs)  # (b, n, c*o*p*q), this process's tokens
        gathered = _all_gather(_pad_tokens(projected, shard, dim=1), self.group, dim=1)  # (b, P*S, c*o*p*q)
        return self.final_layer.unpatchify(gathered[:, :tokens], **kwargs)


@contextmanager
def sequence_parallel(network: Any, group: Any = None) -> Iterator[None]:
    """Run ``network`` (a loaded :class:`~cogvid.dit.DiffusionTransformer`) sequence-parallel over
    ``group`` inside the block; every process of the group must make the same DiT calls."""
    if dist.get_world_size(group) == 1:
        yield
        return
    mixin = UlyssesMixin(network.mixins["final_layer"], network.num_attention_heads, group)
    network.add_mixin(MIXIN_NAME, mixin)
    try:
        yield
    finally:
        network.del_mixin(MIXIN_NAME)


__all__ = ["MIXIN_NAME", "UlyssesMixin", "sequence_parallel"]
