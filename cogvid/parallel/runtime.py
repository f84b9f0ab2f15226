"""Running a :class:`~cogvid.parallel.ParallelPlan`: process groups, the conditioning broadcast, the
guidance split and the sequence-parallel DiT, for :class:`cogvid.pipeline.VideoPipeline`.

Rank 0 of the world is the lead: it encodes the prompt (T5) and the image once and broadcasts the
conditioning; it writes the video. Every rank runs the same sampler steps on the same latents, so
the noise (drawn from the same seed) and every result stay identical across ranks; the VAE decode
runs context-parallel over all of them (:func:`cogvid.vae.parallel.decode_parallel`).

Ranks are laid out as ``rank = cfg_index * P + sequence_index``: ranks ``0 .. P-1`` compute the
unconditional half, ``P .. 2P-1`` the conditional one; each half is split over its ``P`` ranks.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from cogvid import distributed
from cogvid.diffusion.guiders import BATCHED_KEYS
from cogvid.parallel import ParallelPlan
from cogvid.parallel.sequence import sequence_parallel

Conditioning = dict[str, torch.Tensor]

# Collectives wait this long for the slowest rank (a first CUDA compile, a slow disk).
TIMEOUT = _dt.timedelta(minutes=60)


def ensure_process_group(device: torch.device) -> None:
    """The default process group from torchrun's environment (:func:`cogvid.distributed.ensure_process_group`),
    with the rank's CUDA device made current when it runs on CUDA."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.ensure_process_group(TIMEOUT)


class ParallelRuntime:
    """The process groups of one split layout (cfg halves x sequence shards) for this rank."""

    def __init__(self, plan: ParallelPlan, device: torch.device) -> None:
        ensure_process_group(device)
        world, rank = dist.get_world_size(), dist.get_rank()
        if world != plan.world:
            raise RuntimeError(f"the plan is for {plan.world} processes, the process group has {world}")
        self.plan, self.device, self.rank = plan, device, rank
        degree = plan.sequence
        self.cfg_index, self.sequence_index = divmod(rank, degree)
        self.cfg_group = self.sequence_group = None
        # new_group is collective: every rank creates every group, in the same order.
        for half in range(plan.cfg):
            group = dist.new_group(list(range(half * degree, (half + 1) * degree)))
            if half == self.cfg_index:
                self.sequence_group = group
        if plan.cfg > 1:
            for shard in range(degree):
                group = dist.new_group([shard, degree + shard])
                if shard == self.sequence_index:
                    self.cfg_group = group

    @property
    def lead(self) -> bool:
        return self.rank == 0

    @property
    def decode_group(self) -> Any:
        """The ranks that decode the video together: all of them."""
        return dist.group.WORLD

    def agree(self, value: Any) -> Any:
        """The lead's ``value`` (picklable) on every rank."""
        box = [value if self.lead else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def share_conditioning(self, make: Callable[[], tuple[Conditioning, Conditioning]]) -> tuple[Conditioning, Conditioning]:
        """``make()`` runs on the lead only (T5, the image encoder); its (cond, uncond) reach every rank."""
        pair = None
        if self.lead:
            cond, uncond = make()
            pair = ({k: v.cpu() for k, v in cond.items()}, {k: v.cpu() for k, v in uncond.items()})
        cond, uncond = self.agree(pair)
        return ({k: v.to(self.device) for k, v in cond.items()}, {k: v.to(self.device) for k, v in uncond.items()})

    @contextmanager
    def denoising(self, network: Any, denoise: Callable[..., torch.Tensor], batch: int) -> Iterator[Callable[..., torch.Tensor]]:
        """The denoiser function for the sampler while the DiT runs split over this layout."""
        sequence = sequence_parallel(network, self.sequence_group) if self.plan.sequence > 1 else _nothing()
        with sequence:
            yield CfgSplit(denoise, self.cfg_group, batch) if self.plan.cfg > 1 else denoise


@contextmanager
def _nothing() -> Iterator[None]:
    yield


class CfgSplit:
    """A denoiser that computes only this rank's half of the guidance batch ``[uncond; cond]``
    and gathers the other half from its partner, so the guider mixes the same numbers on both."""

    def __init__(self, denoise: Callable[..., torch.Tensor], group: Any, batch: int) -> None:
        self.denoise, self.group, self.batch = denoise, group, batch
        self.index = dist.get_rank(group)

    def __call__(self, x: torch.Tensor, level: torch.Tensor, cond: dict[str, Any], **extra: Any) -> torch.Tensor:
        doubled = 2 * self.batch
        if x.shape[0] != doubled:  # an unguided call: nothing to split
            return self.denoise(x, level, cond, **extra)
        mine = slice(self.index * self.batch, (self.index + 1) * self.batch)

        def half(value: Any, batched: bool) -> Any:
            is_doubled = isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == doubled
            return value[mine] if batched and is_doubled else value

        own = self.denoise(
            x[mine],
            level[mine],
            {key: half(value, key in BATCHED_KEYS) for key, value in cond.items()},
            **{key: half(value, True) for key, value in extra.items()},
        )  # (B, ...)
        parts = [torch.empty_like(own) for _ in range(2)]
        dist.all_gather(parts, own.contiguous(), group=self.group)
        return torch.cat(parts)  # (2B, ...): [uncond; cond]


__all__ = ["CfgSplit", "ParallelRuntime", "ensure_process_group"]
