"""Context-parallel VAE decode across torchrun ranks, equal to the single-process chunked decode.

The single-process decode (:meth:`VideoAutoencoder.decode`) runs the chunks of
:func:`~cogvid.vae.autoencoder.decode_plan` one after another; chunk ``i`` needs, at every causal
convolution, the last ``k - 1`` input frames of chunk ``i - 1`` at that layer (the conv cache,
REFERENCE §4.7). Here chunk ``i`` runs on rank ``i mod world``; each causal conv receives that
halo from the previous rank and sends its own tail to the next one as soon as it is computed.
GroupNorm statistics stay per chunk, so the result is exactly the sequential one. Ranks form a
wavefront: chunk ``i`` trails chunk ``i - 1`` by about one layer, so ``world`` chunks are in
flight at once. Every rank receives the whole video.

The caller owns the process group (``torch.distributed.init_process_group`` with gloo on CPU or
NCCL on GPU, e.g. under ``torchrun``); this module never creates one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from cogvid.errors import UsageError
from cogvid.vae.autoencoder import ProgressCallback, VideoAutoencoder, chunk_pixel_frames, decode_plan
from cogvid.vae.layers import ConvCache


class _RankHalo(ConvCache):
    """Halo exchange for one chunk: receive from the previous chunk's rank, send to the next's."""

    def __init__(self, source: int | None, target: int | None, group: dist.ProcessGroup | None, pending: list) -> None:
        super().__init__()
        self.source, self.target, self.group, self.pending = source, target, group, pending
        self.tags: dict[str, int] = {}

    def _tag(self, name: str) -> int:
        return self.tags.setdefault(name, len(self.tags))

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor | None:
        if self.source is None:
            return None
        halo = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        dist.recv(halo, src=self.source, group=self.group, tag=self._tag(name))
        return halo

    def put(self, name: str, tail: torch.Tensor) -> None:
        tag = self._tag(name)
        if self.target is not None:
            tail = tail.contiguous()
            self.pending.append((dist.isend(tail, dst=self.target, group=self.group, tag=tag), tail))


@torch.no_grad()
def decode_parallel(
    vae: VideoAutoencoder,
    z: torch.Tensor,
    *,
    schedule: str | None = None,
    group: dist.ProcessGroup | None = None,
    callback: ProgressCallback | None = None,
) -> torch.Tensor:
    """Decode latents (B, 16, T, h, w) (already divided by ``scale_factor``) on all ranks of ``group``.

    Every rank must call this with the same ``z`` and ``schedule``; each returns the full video
    (B, 3, F, 8h, 8w), equal to ``vae.decode(z, schedule=schedule)``. ``callback(chunk_index,
    num_chunks)`` runs on the rank that decoded the chunk.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise UsageError(
            "context-parallel VAE decode needs an initialized torch.distributed process group",
            hint="launch with torchrun and call torch.distributed.init_process_group first, or use vae.decode()",
        )
    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if world == 1:
        return vae.decode(z, schedule=schedule, callback=callback)

    def global_rank(group_rank: int) -> int:
        return group_rank if group is None else dist.get_global_rank(group, group_rank)

    vae.require_weights()
    plan = decode_plan(z.shape[2], schedule or vae.default_schedule())
    z = z.to(vae.dtype)
    frames = [chunk_pixel_frames(c.end - c.start, c.first_frame, vae.temporal_levels) for c in plan]
    scale = 2 ** (len(vae.decoder.up) - 1)
    batch, _, _, height, width = z.shape
    out_channels = vae.decoder.conv_out.conv.out_channels
    out = z.new_empty(batch, out_channels, sum(frames), height * scale, width * scale)
    starts = [sum(frames[:index]) for index in range(len(plan))]
    pending: list = []
    for index, chunk in enumerate(plan):
        if index % world != rank:
            continue
        halo = _RankHalo(
            source=global_rank((index - 1) % world) if index > 0 else None,
            target=global_rank((index + 1) % world) if index + 1 < len(plan) else None,
            group=group,
            pending=pending,
        )
        piece = vae.decoder(z[:, :, chunk.start : chunk.end], chunk.first_frame, halo)
        out[:, :, starts[index] : starts[index] + frames[index]] = piece
        del piece
        if callback is not None:
            callback(index, len(plan))
    for work, _ in pending:
        work.wait()
    for index in range(len(plan)):
        piece = out[:, :, starts[index] : starts[index] + frames[index]].contiguous()
        dist.broadcast(piece, src=global_rank(index % world), group=group)
        out[:, :, starts[index] : starts[index] + frames[index]] = piece
    return out
