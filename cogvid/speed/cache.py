"""Step caches: skip the DiT's blocks at denoising steps whose result would barely change.

Both caches keep the residual the blocks added at the last step they ran (output minus input of the
block stack) and, at a skipped step, add that residual to the new input instead of running the blocks.
They decide differently:

* :class:`TeaCache` (Liu et al., "Timestep Embedding Tells: It's Time to Cache"): the relative L1
  change of the time embedding since the previous step, rescaled by a per-model polynomial into an
  estimate of the output's change, is accumulated; while the sum stays under the threshold the step
  is skipped, and the sum restarts at every step that runs;
* :class:`FirstBlockCache` (ParaAttention's "first block cache"): the first block always runs; when
  its residual differs from the one of the last step that ran by less than the threshold (relative
  L1), the other blocks are skipped.

The first and the last forward of a video always run. Counters say how many forwards ran whole and
how many were skipped; the sidecar records them.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from cogvid.speed.calibration import polynomial

Block = Any  # a DiTBlock or its compiled wrapper: (hidden, emb, text_length, cos, sin) -> hidden


def relative_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    """mean |new - old| / mean |old|, in float32."""
    old32 = old.float()
    return float((new.float() - old32).abs().mean() / old32.abs().mean().clamp_min(1e-12))


class StepCache(abc.ABC):
    """Counters and the always-run rule shared by the caches; ``total`` is the expected number of forwards."""

    kind = ""

    def __init__(self, threshold: float, total: int) -> None:
        self.threshold = threshold
        self.total = total
        self.forwards = 0
        self.skipped = 0
        self.blocks_run = 0
        self.blocks_total = 0
        self.residual: torch.Tensor | None = None

    def _forced(self, index: int, hidden: torch.Tensor) -> bool:
        """The first and last forward run, and so does any whose shape differs from the cached residual."""
        return index == 0 or index >= self.total - 1 or self.residual is None or self.residual.shape != hidden.shape

    def _run(self, blocks: Sequence[Block], hidden: torch.Tensor, *args: Any) -> torch.Tensor:
        for block in blocks:
            hidden = block(hidden, *args)
        self.blocks_run += len(blocks)
        return hidden

    def stats(self) -> dict[str, Any]:
        """What the sidecar records: the forwards that ran whole and those skipped, blocks run of all."""
        return {"dit_forwards": self.forwards, "ran": self.forwards - self.skipped, "skipped": self.skipped,
                "blocks_run": self.blocks_run, "blocks_total": self.blocks_total}

    @abc.abstractmethod
    def run(self, blocks: Sequence[Block], hidden: torch.Tensor, emb: torch.Tensor, text_length: int,
            cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        """The block stack's output for ``hidden``: run (some of) ``blocks``, or the cached residual added."""


class TeaCache(StepCache):
    """TeaCache with a model's polynomial ``coefficients`` (highest degree first)."""

    kind = "teacache"

    def __init__(self, threshold: float, total: int, coefficients: Sequence[float]) -> None:
        super().__init__(threshold, total)
        self.coefficients = tuple(coefficients)
        self.accumulated = 0.0
        self.previous_emb: torch.Tensor | None = None
        self.changes: list[float] = []  # the raw embedding changes seen (calibration reads them)

    def run(self, blocks, hidden, emb, text_length, cos, sin):  # noqa: ANN001, ANN201 (see StepCache.run)
        index = self.forwards
        self.forwards += 1
        self.blocks_total += len(blocks)
        compute = True
        if self.previous_emb is not None and self.previous_emb.shape == emb.shape:
            change = relative_l1(emb, self.previous_emb)
            self.changes.append(change)
        if self._forced(index, hidden) or self.previous_emb is None:
            self.accumulated = 0.0
        else:
            self.accumulated += polynomial(self.coefficients, self.changes[-1])
            if self.accumulated < self.threshold:
                compute = False
            else:
                self.accumulated = 0.0
        self.previous_emb = emb
        if not compute:
            self.skipped += 1
            return hidden + self.residual
        start = hidden
        hidden = self._run(blocks, hidden, emb, text_length, cos, sin)
        self.residual = hidden - start
        return hidden


class FirstBlockCache(StepCache):
    """The first-block residual cache."""

    kind = "fbcache"

    def __init__(self, threshold: float, total: int) -> None:
        super().__init__(threshold, total)
        self.first_residual: torch.Tensor | None = None

    def run(self, blocks, hidden, emb, text_length, cos, sin):  # noqa: ANN001, ANN201 (see StepCache.run)
        index = self.forwards
        self.forwards += 1
        self.blocks_total += len(blocks)
        first = self._run(blocks[:1], hidden, emb, text_length, cos, sin)
        first_residual = first - hidden
        forced = self._forced(index, hidden) or self.first_residual is None
        if not forced and relative_l1(first_residual, self.first_residual) < self.threshold:
            self.skipped += 1
            return first + self.residual
        self.first_residual = first_residual
        hidden = self._run(blocks[1:], first, emb, text_length, cos, sin)
        self.residual = hidden - first
        return hidden


def make_cache(setting: str, total: int, coefficients: Sequence[float] | None = None) -> StepCache:
    """The cache of a prepared request's ``cache`` value (``"kind:threshold"``) for ``total`` forwards."""
    from cogvid.speed.options import parse_cache

    kind, threshold = parse_cache(setting)
    if threshold is None:
        from cogvid.speed.options import DEFAULT_THRESHOLDS

        threshold = DEFAULT_THRESHOLDS[kind]
    if kind == "teacache":
        if coefficients is None:
            raise ValueError("TeaCache needs the model's coefficients")
        return TeaCache(threshold, total, coefficients)
    return FirstBlockCache(threshold, total)


@contextlib.contextmanager
def step_cache(network: Any, cache: StepCache) -> Iterator[StepCache]:
    """Run the DiT ``network`` with ``cache`` for the duration of the block (one video).

    A network without a :class:`~cogvid.speed.blocks.BlockStack` gets an eager one for that time,
    so the next video without a cache runs SAT's own layer loop again.
    """
    from cogvid.speed.blocks import BlockStack

    installed_here = network.speed_blocks is None
    if installed_here:
        network.speed_blocks = BlockStack(network)
    network.speed_blocks.cache = cache
    try:
        yield cache
    finally:
        network.speed_blocks.cache = None
        if installed_here:
            network.speed_blocks = None


__all__ = ["ChangeRecorder", "FirstBlockCache", "StepCache", "TeaCache", "make_cache", "relative_l1", "step_cache"]


class ChangeRecorder(StepCache):
    """Runs every forward whole and records, per step, the relative L1 change of the time embedding
    and of the blocks' output (what ``cogvid cache calibrate`` fits TeaCache's polynomial to)."""

    kind = "record"

    def __init__(self, total: int) -> None:
        super().__init__(0.0, total)
        self.previous: tuple[torch.Tensor, torch.Tensor] | None = None
        self.pairs: list[tuple[float, float]] = []  # (embedding change, output change)

    def run(self, blocks, hidden, emb, text_length, cos, sin):  # noqa: ANN001, ANN201 (see StepCache.run)
        self.forwards += 1
        self.blocks_total += len(blocks)
        hidden = self._run(blocks, hidden, emb, text_length, cos, sin)
        if self.previous is not None and self.previous[1].shape == hidden.shape:
            self.pairs.append((relative_l1(emb, self.previous[0]), relative_l1(hidden, self.previous[1])))
        self.previous = (emb, hidden)
        return hidden
