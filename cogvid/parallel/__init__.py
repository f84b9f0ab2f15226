"""Many processes, one video: how a ``torchrun`` world splits the denoising of each video.

``--parallel`` (:attr:`cogvid.request.ModelChoice.parallel`) names a mode:

* ``data``: every process makes whole videos; a batch's prompts (and ``-n`` videos) are shared out
  (video ``i`` on rank ``i % world``). Nothing is exchanged while denoising.
* ``cfg``: two processes; one runs the DiT on the unconditional half of the guidance batch, the
  other on the conditional half, and they swap results every step.
* ``sequence``: ``P`` processes split the video tokens; attention exchanges them (Ulysses
  all-to-all: full sequence, ``heads / P`` heads per process). Text tokens are on every process.
* ``cfg+sequence``: ``2 x P`` processes: the two guidance halves, each split over ``P``.
* ``auto``: ``data`` for a batch; otherwise ``cfg+sequence`` (``cfg`` for 2 processes) when the
  sampler guides, else ``sequence``, choosing what the model's heads allow.

This module decides the layout and checks it before anything loads (no torch here);
:mod:`cogvid.parallel.runtime` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cogvid.errors import UsageError, choice_hint

PARALLEL_MODES = ("auto", "data", "cfg", "sequence", "cfg+sequence")
SPLIT_MODES = ("cfg", "sequence", "cfg+sequence")  # one video over several processes


@dataclass(frozen=True)
class ParallelPlan:
    """How one video runs over ``world`` processes: ``cfg`` guidance halves x ``sequence`` token shards.

    ``mode`` is the resolved mode ("single" for one process, "data", or a split mode); a split plan
    has ``cfg * sequence == world``.
    """

    mode: str
    world: int = 1
    cfg: int = 1
    sequence: int = 1

    @property
    def splits_video(self) -> bool:
        """True when several processes make each video together (cfg and/or sequence)."""
        return self.cfg * self.sequence > 1

    def describe(self) -> dict[str, int | str]:
        return {"mode": self.mode, "world_size": self.world, "cfg": self.cfg, "sequence": self.sequence}


SINGLE = ParallelPlan("single")


def sequence_shard(tokens: int, degree: int, index: int) -> tuple[int, int]:
    """``[start, end)`` of the video tokens that shard ``index`` of ``degree`` holds.

    Shards are contiguous runs of ``ceil(tokens / degree)`` tokens in (t, h, w) order; the last one
    may be shorter (it is padded for the all-to-all and the padding is never attended to).
    """
    size = -(-tokens // degree)
    return min(index * size, tokens), min((index + 1) * size, tokens)


def sequence_degree_ok(degree: int, heads: int, tokens: int) -> bool:
    """Whether ``degree`` processes can split ``heads`` attention heads and ``tokens`` video tokens
    (each holds ``heads / degree`` heads in attention and at least one token)."""
    return degree >= 1 and heads % degree == 0 and (degree - 1) * -(-tokens // degree) < tokens


def valid_sequence_degrees(heads: int, tokens: int) -> list[int]:
    """Every sequence degree that fits this model and video."""
    return [d for d in range(1, heads + 1) if sequence_degree_ok(d, heads, tokens)]


def plan_parallel(mode: str, world: int, *, heads: int, tokens: int, guided: bool, batch: bool = False) -> ParallelPlan:
    """The layout of ``mode`` over ``world`` processes for a video of ``tokens`` DiT tokens.

    ``heads``: the DiT's attention heads; ``guided``: whether the sampler runs an unconditional
    half (classifier-free guidance); ``batch``: the command makes many videos (``auto`` shares
    them out). Raises a UsageError naming the valid choices when the split is impossible.
    """
    if mode not in PARALLEL_MODES:
        raise UsageError(f"unknown --parallel mode {mode!r}", hint=choice_hint(mode, PARALLEL_MODES))
    if world <= 1:
        if mode in SPLIT_MODES:
            raise UsageError(
                f"--parallel {mode} splits a video over several processes, but this is the only one",
                hint=f"launch with torchrun, e.g. `torchrun --nproc_per_node {2 if mode == 'cfg' else 4} -m cogvid t2v ...`,"
                " or use --parallel auto",
            )
        return SINGLE
    if mode == "data" or (mode == "auto" and batch):
        return ParallelPlan("data", world)
    if mode == "auto":
        mode = _auto_mode(world, heads, tokens, guided)
    if mode in ("cfg", "cfg+sequence") and not guided:
        raise UsageError(
            f"--parallel {mode}: this sampler runs no unconditional half (no classifier-free guidance), so there is nothing to split",
            hint="use --parallel sequence",
        )
    if mode == "cfg":
        if world != 2:
            raise UsageError(
                f"--parallel cfg uses exactly 2 processes (the two guidance halves), not {world}",
                hint=f"use --parallel cfg+sequence for {world} processes, or torchrun --nproc_per_node 2",
            )
        return ParallelPlan("cfg", world, cfg=2)
    cfg = 2 if mode == "cfg+sequence" else 1
    if world % cfg:
        raise UsageError(
            f"--parallel cfg+sequence needs an even number of processes (2 guidance halves x P), not {world}",
            hint="use --parallel sequence, or an even --nproc_per_node",
        )
    degree = world // cfg
    if not sequence_degree_ok(degree, heads, tokens):
        valid = [d for d in valid_sequence_degrees(heads, tokens) if d > 1]
        per = "processes" if cfg == 1 else "processes per guidance half"
        why = f"{heads} attention heads" if heads % degree else f"{tokens} video tokens"
        shown = ", ".join(str(d * cfg) for d in valid) or "none"
        raise UsageError(
            f"--parallel {mode}: {degree} {per} cannot split {why} (each process takes heads/{degree} heads and a share of the tokens)",
            hint=f"valid process counts for {mode} with this model and size: {shown}",
        )
    return ParallelPlan(mode, world, cfg=cfg, sequence=degree)


@dataclass(frozen=True)
class Share:
    """What this process does with a prepared request's videos under torchrun."""

    videos: list  # the prepared requests (one per video) this process takes part in
    writes: bool  # it writes them (and prints their results)
    lead: bool  # it shows the progress (rank 0)
    encodes_text: bool  # it needs the text encoder (in a split, rank 0 encodes for every rank)


def my_share(prepared: Any) -> Share:
    """This process's part of a :class:`~cogvid.prepare.PreparedRequest`: with ``data``, video ``i``
    of ``-n`` is made (and written) by rank ``i % world``; split modes make every video on every
    rank and rank 0 writes it."""
    from cogvid.distributed import rank_info, shard

    rank = rank_info()[0]
    videos, plan = prepared.videos(), prepared.parallel
    if plan.mode == "data":
        return Share(shard(videos, rank, plan.world), True, rank == 0, True)
    return Share(videos, rank == 0, rank == 0, rank == 0 or not plan.splits_video)


def _auto_mode(world: int, heads: int, tokens: int, guided: bool) -> str:
    if guided and world == 2:
        return "cfg"
    if guided and world % 2 == 0 and sequence_degree_ok(world // 2, heads, tokens):
        return "cfg+sequence"
    return "sequence"


__all__ = [
    "PARALLEL_MODES",
    "SINGLE",
    "SPLIT_MODES",
    "ParallelPlan",
    "Share",
    "my_share",
    "plan_parallel",
    "sequence_degree_ok",
    "sequence_shard",
    "valid_sequence_degrees",
]
